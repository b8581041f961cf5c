"""Checks of ``vsnystra restore``'s settings before any model loads: the output folder, the encoder settings and the
container, so a user's mistake costs one line (exit 2) instead of hours of restoration thrown away at the end.

The encoder and the muxer are opened for real, on each input's stream layout (its size, the streams that would be
copied), writing the header to memory; the explicit checks before that only make the usual mistakes' messages say
the fix.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av

from vsnystra.cli.media import CODECS, Colour, EncodeSettings, add_video_stream

log = logging.getLogger(__name__)

PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")
CRF_RANGE = (0.0, 51.0)  # x264 and x265 (8-bit scale; both clamp or refuse outside it)
FORMAT_NAMES = {"matroska": "mkv", "mp4": "mp4", "mov": "mov"}


class UsageError(Exception):
    """A mistake in the command line: one line naming the problem and the fix."""


def check_folder(folder: Path, flag: str) -> None:
    """``folder`` is, or can be created as, a folder this process can write files into."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"restore: {flag}{folder} is a file, not a folder; name a folder (created if missing)")
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"restore: cannot create the folder {folder}: {probe} is a file; name another {flag}folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".vsnystra-write-test-", dir=probe)
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise UsageError(f"restore: cannot write into {probe} ({why}); name a writable {flag}folder") from None
    os.close(fd)
    os.unlink(name)


def check_encode(encode: EncodeSettings) -> None:
    """The settings' own sense, with the fix in the message (before opening the encoder)."""
    lib = CODECS[encode.codec]
    if encode.codec == "ffv1":
        if encode.crf is not None or encode.preset is not None:
            log.warning("restore: --crf and --preset do not apply to --codec ffv1 (lossless); they are ignored")
    else:
        lo, hi = CRF_RANGE
        if encode.crf is not None and not lo <= encode.crf <= hi:
            raise UsageError(f"restore: --crf {encode.crf:g} is out of range for {encode.codec}; use {lo:g}-{hi:g}")
        if encode.preset is not None and encode.preset not in PRESETS:
            raise UsageError(
                f"restore: --preset {encode.preset} is not an {encode.codec} preset; use one of {', '.join(PRESETS)}"
            )
    pix_fmt = encode.resolved_pix_fmt()
    formats = [f.name for f in av.Codec(lib, "w").video_formats or ()]
    if pix_fmt not in formats:
        raise UsageError(
            f"restore: --pix-fmt {pix_fmt} is not a pixel format {lib} encodes; use one of {', '.join(formats)}"
        )


def check_layout(
    encode: EncodeSettings, container_format: str, size: tuple[int, int], copy_streams: Sequence[av.stream.Stream]
) -> None:
    """Open the encoder and write the container's header (to memory) with the video and ``copy_streams``."""
    fmt = FORMAT_NAMES.get(container_format, container_format)
    try:
        _open(encode, container_format, size, [])
    except (av.FFmpegError, ValueError) as e:
        raise UsageError(
            f"restore: {CODECS[encode.codec]} does not open with these settings ({e}); change them"
        ) from None
    for s in copy_streams:
        try:
            _open(encode, container_format, size, [s])
        except (av.FFmpegError, ValueError):
            codec = getattr(s.codec_context, "name", "?")
            if s.type == "subtitle" and codec in ("subrip", "srt"):
                raise UsageError(f"restore: {fmt} cannot hold SRT subtitles: use .mkv or --no-subtitles") from None
            fix = "use .mkv or --no-subtitles" if s.type == "subtitle" else "use .mkv"
            raise UsageError(f"restore: {fmt} cannot hold the {s.type} stream #{s.index} ({codec}): {fix}") from None


def _open(
    encode: EncodeSettings, container_format: str, size: tuple[int, int], copy: Sequence[av.stream.Stream]
) -> None:
    w, h = size[0] + size[0] % 2, size[1] + size[1] % 2  # odd sizes are a per-file failure with its own advice
    with av.open(io.BytesIO(), "w", format=container_format) as out:
        add_video_stream(
            out,
            encode,
            width=w,
            height=h,
            rate=Fraction(25),
            time_base=Fraction(1, 25),
            colour=Colour(),
            sample_aspect_ratio=None,
        )
        for s in copy:
            out.add_stream_from_template(s)
        out.start_encoding()


FIELD_ORDERS = {
    2: "top field first",
    3: "bottom field first",
    4: "top coded first, bottom displayed first",
    5: "bottom coded first, top displayed first",
}


def interlacing(inp: av.container.InputContainer, vin: av.video.stream.VideoStream) -> str | None:
    """How the stream is interlaced (its field order tag, else the first frame's flag), or None if progressive."""
    order = int(vin.codec_context.field_order or 0)
    if order in FIELD_ORDERS:
        return FIELD_ORDERS[order]
    if order == 0:  # unknown: ask the first frame
        for frame in inp.decode(vin):
            return "interlaced frames" if frame.interlaced_frame else None
    return None


def check_inputs(
    encode: EncodeSettings, container_format: str, videos: Sequence[Path], subtitles: bool
) -> list[tuple[Path, str]]:
    """``check_layout`` for each readable video input (unreadable ones fail on their own, later, in the batch);
    returns the interlaced inputs with their field order."""
    interlaced: list[tuple[Path, str]] = []
    from vsnystra.cli.pipeline import _open_av_source

    check_layout(encode, container_format, (64, 64), [])
    for src in videos:
        try:
            inp = av.open(str(src), "r")
        except (OSError, av.FFmpegError, ValueError):
            continue
        with inp:
            try:
                source = _open_av_source(inp, warn=False)
            except (av.FFmpegError, ValueError):
                continue
            copy = [s for s in source.copy_streams if subtitles or s.type != "subtitle"]
            check_layout(encode, container_format, source.size, copy)
            how = interlacing(inp, source.video_stream)
            if how is not None:
                interlaced.append((src, how))
    return interlaced
