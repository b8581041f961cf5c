"""One input → one encoded output file: decode (PyAV or a .vpy script), restore, encode, remux the other streams.

Audio, subtitle and data packets are copied untouched (no re-encode) and interleaved by time with the restored
video; video timestamps (pts, time base, frame rate) are carried over frame by frame.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import runpy
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.stream
import numpy as np

from vsnystra.cli import interrupt
from vsnystra.cli.media import Colour, EncodeSettings, FrameConverter, add_video_stream

log = logging.getLogger(__name__)

Restorer = Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]]
OnFrame = Callable[[int], None]
PREFETCH_FRAMES = 4
MAX_REORDER_FRAMES = 64  # more than any encoder's reorder delay (H.264/HEVC allow 16)

COPY_TYPES = ("audio", "subtitle", "data")
# Tags that describe the old encode and would be wrong on the new file (the muxer writes fresh ones).
_STALE_TAGS = frozenset({"duration", "encoder", "bps", "number_of_frames", "number_of_bytes", "_statistics_tags"})


def _copy_tags(src: Any, dst: Any) -> None:
    """Copy metadata (title, language, …) and disposition, skipping per-encode statistics."""
    with contextlib.suppress(AttributeError, TypeError, ValueError):
        for k, v in dict(src.metadata).items():
            if k.lower().split("-")[0] not in _STALE_TAGS and not k.lower().startswith("_statistics"):
                dst.metadata[k] = v
    with contextlib.suppress(AttributeError, TypeError, ValueError):
        if hasattr(src, "disposition") and hasattr(dst, "disposition"):
            dst.disposition = src.disposition


@dataclass
class Source:
    """A decoded input: frames as (3, H, W) float32 RGB arrays plus what the encoder must carry over."""

    frames: Iterator[np.ndarray]
    pts: deque[int | None]  # filled as frames are decoded, consumed as restored frames are encoded
    rate: Fraction
    time_base: Fraction
    colour: Colour
    size: tuple[int, int]  # (w, h) of the source
    total: int | None
    sample_aspect_ratio: Fraction | None
    copy_streams: list[Any]
    video_stream: Any  # the source video stream (tags to copy), None for .vpy
    container: Any  # the input container (global tags to copy), None for .vpy
    pending: deque[Any]  # packets of copied streams waiting to be interleaved
    converter: FrameConverter


def _is_picture(stream: Any) -> bool:
    """Cover art / thumbnails: a 'video' stream holding one still picture."""
    flags = int(getattr(stream, "disposition", 0) or 0)
    return bool(flags & (int(av.stream.Disposition.attached_pic) | int(av.stream.Disposition.timed_thumbnails)))


def _frac(x: Any) -> Fraction:
    """PyAV rationals (typed AVRational) → Fraction."""
    return Fraction(int(x.numerator), int(x.denominator))


def _open_av_source(container: av.container.InputContainer, *, warn: bool = True) -> Source:
    """The input's first real video stream as a Source; ``warn``: log the streams that are not copied."""
    videos = [s for s in container.streams.video if not _is_picture(s)]
    if not videos:
        raise ValueError("no video stream")
    vin = videos[0]  # the first real video stream is restored; further ones are copied untouched
    vin.thread_type = "AUTO"
    copy = [s for s in container.streams if s.index != vin.index and (s.type in COPY_TYPES or s in videos)]
    for s in container.streams:
        if warn and s.index != vin.index and s not in copy:
            log.warning(
                "stream #%d (%s, %s) is not copied (attachments and cover art are not supported)",
                s.index,
                s.type,
                getattr(s.codec_context, "name", "?"),
            )
    rate = _frac(vin.average_rate or vin.guessed_rate or Fraction(25))
    tb = _frac(vin.time_base) if vin.time_base else 1 / rate
    colour = Colour.of(vin.codec_context)
    total = int(vin.frames) or None
    if total is None and vin.duration and vin.time_base:
        total = round(float(vin.duration * vin.time_base * rate)) or None
    elif total is None and container.duration:
        total = round(container.duration / 1_000_000 * float(rate)) or None
    sar = vin.sample_aspect_ratio
    conv = FrameConverter(colour)
    pts: deque[int | None] = deque()
    pending: deque[Any] = deque()

    def frames() -> Iterator[np.ndarray]:
        for packet in container.demux(vin, *copy):
            if packet.stream.index == vin.index:
                for frame in packet.decode():
                    if isinstance(frame, av.VideoFrame):
                        pts.append(frame.pts)
                        yield conv.to_array(frame)
            elif packet.dts is not None or packet.pts is not None:
                pending.append(packet)

    return Source(
        frames=frames(),
        pts=pts,
        rate=rate,
        time_base=tb,
        colour=colour,
        size=(vin.width, vin.height),
        total=total,
        sample_aspect_ratio=_frac(sar) if sar else None,
        copy_streams=copy,
        video_stream=vin,
        container=container,
        pending=pending,
        converter=conv,
    )


def _vs_colour(props: Any) -> Colour:
    """VapourSynth frame props (ITU-T H.273 codes) → FFmpeg colour tags.

    ``_Range`` (R74+) is 1 = full, 0 = limited; the deprecated ``_ColorRange`` is the reverse (0 = full).
    """
    if "_Range" in props:
        color_range = 2 if int(props["_Range"]) == 1 else 1
    elif "_ColorRange" in props:
        color_range = 2 if int(props["_ColorRange"]) == 0 else 1
    else:
        color_range = 0
    return Colour(
        colorspace=int(props.get("_Matrix", 2)),
        color_range=color_range,
        color_primaries=int(props.get("_Primaries", 2)),
        color_trc=int(props.get("_Transfer", 2)),
    )


def _open_vpy_source(script: Path, script_args: Mapping[str, str] | None = None) -> Source:
    """Evaluate a .vpy in a fresh namespace, take output 0, and stream its frames as float RGB.

    ``script_args`` become string globals of the script, as ``vspipe -a name=value`` sets them.
    """
    import vapoursynth as vs

    vs.clear_outputs()
    argv = sys.argv
    try:
        sys.argv = [str(script)]
        runpy.run_path(str(script), init_globals=dict(script_args or {}), run_name="__vapoursynth__")
    finally:
        sys.argv = argv
    outputs = vs.get_outputs()
    if 0 not in outputs:
        raise ValueError("the script sets no output 0; end it with clip.set_output()")
    node = outputs[0]
    node = getattr(node, "clip", node)  # VideoOutputTuple → VideoNode
    if not isinstance(node, vs.VideoNode):
        raise ValueError(f"output 0 is {type(node).__name__}, not a video clip")
    if node.format is None or node.width == 0:
        raise ValueError("output 0 has a variable format or size; resize/convert it to one format in the script")
    props = node.get_frame(0).props
    colour = _vs_colour(props)
    w, h = node.width, node.height
    if node.format.color_family != vs.RGB or node.format.sample_type != vs.FLOAT:
        kw: dict[str, Any] = {}
        if node.format.color_family == vs.YUV and int(props.get("_Matrix", 2)) in (0, 2):
            kw["matrix_in_s"] = "709" if w >= 1280 or h >= 720 else "170m"
        node = node.resize.Bicubic(format=vs.RGBS, **kw)
    fps = Fraction(node.fps.numerator, node.fps.denominator) if node.fps.numerator else Fraction(0)
    if fps <= 0:
        log.warning("%s: variable frame rate output; encoding at 25 fps", script.name)
        fps = Fraction(25)
    pts: deque[int | None] = deque()

    def frames() -> Iterator[np.ndarray]:
        for i, f in enumerate(node.frames()):
            arr = np.stack([np.asarray(f[p], dtype=np.float32) for p in range(3)])
            pts.append(i)
            yield arr

    return Source(
        frames=frames(),
        pts=pts,
        rate=fps,
        time_base=1 / fps,
        colour=colour,
        size=(w, h),
        total=node.num_frames,
        sample_aspect_ratio=None,
        copy_streams=[],
        video_stream=None,
        container=None,
        pending=deque(),
        converter=FrameConverter(colour),
    )


def process(
    src: Path,
    tmp: Path,
    *,
    restorer: Restorer | None,
    encode: EncodeSettings,
    container_format: str | None = None,
    on_start: Callable[[int | None], None] | None = None,
    on_frame: OnFrame | None = None,
    script_args: Mapping[str, str] | None = None,
) -> int:
    """Restore ``src`` into ``tmp`` (which the caller renames when this returns); returns the frame count.

    ``restorer`` None means pass frames through unchanged (.vpy scripts: the script did the work).
    """
    if src.suffix.lower() == ".vpy":
        return _run(
            _open_vpy_source(src, script_args), None, tmp, restorer, encode, container_format, on_start, on_frame
        )
    with av.open(str(src), "r") as inp:
        source = _open_av_source(inp)
        prefetch = Prefetch(source.frames, depth=PREFETCH_FRAMES)
        source.frames = prefetch
        try:
            return _run(source, inp, tmp, restorer, encode, container_format, on_start, on_frame)
        finally:
            prefetch.close()  # the decoding thread must be gone before the input container closes


class Prefetch(Iterator[np.ndarray]):
    """Run a frame iterator (demux, decode, colour conversion) in a thread, ``depth`` frames ahead.

    Why: decoding and swscale release the GIL, so they overlap with the model (which releases it too) instead of
    adding to its time, as the separate vspipe and ffmpeg processes overlap in the pipe.
    """

    def __init__(self, it: Iterator[np.ndarray], depth: int = 4) -> None:
        self._q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(it,), name="vsnystra-decode", daemon=True)
        self._thread.start()

    def _put(self, msg: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(msg, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, it: Iterator[np.ndarray]) -> None:
        try:
            for item in it:
                if not self._put(("item", item)):
                    break
            else:
                self._put(("end", None))
        except BaseException as e:  # handed to the consumer, raised there
            self._put(("error", e))
        finally:  # finish the generator here, while the input container is still open
            close = getattr(it, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()

    def __next__(self) -> np.ndarray:
        kind, value = self._q.get()
        if kind == "item":
            return value  # type: ignore[no-any-return]
        self._q.put((kind, value))  # keep answering the same way if asked again
        if kind == "end":
            raise StopIteration
        raise value

    def close(self) -> None:
        """Stop the thread and wait for it (it stops within ~0.1 s or after the frame it is decoding)."""
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._q.get_nowait()
            self._thread.join(timeout=0.05)


def sane_dts(pts: int | None, dts: int | None, last_dts: int | None, step: int) -> int | None:
    """A decode timestamp the muxer accepts: the encoder's where it is plausible, else the next one possible.

    Why: libx265 hands out an uninitialised dts for a stream of one frame (NUT and MP4 then refuse the packet with
    EINVAL). Plausible: after the previous dts, at most ``pts`` and at most MAX_REORDER_FRAMES frames before it.
    """
    if pts is None:
        return dts
    plausible = dts is not None and pts - MAX_REORDER_FRAMES * step <= dts <= pts
    if plausible and (last_dts is None or dts > last_dts):  # type: ignore[operator]
        return dts
    return pts if last_dts is None else max(last_dts + 1, min(pts, last_dts + step))


def _run(
    source: Source,
    inp: av.container.InputContainer | None,
    tmp: Path,
    restorer: Restorer | None,
    encode: EncodeSettings,
    container_format: str | None,
    on_start: Callable[[int | None], None] | None,
    on_frame: OnFrame | None,
) -> int:
    if on_start is not None:
        on_start(source.total)
    frames: Iterator[np.ndarray] = source.frames if restorer is None else restorer(source.frames)
    pix_fmt = encode.resolved_pix_fmt()
    out_colour = source.colour.for_output(pix_fmt, source.size)
    step = max(1, round(1 / (source.rate * source.time_base)))
    last_pts: int | None = None
    last_dts: int | None = None
    n = 0
    with av.open(str(tmp), "w", format=container_format) as out:
        vout = None
        omap: dict[int, Any] = {}

        def mux_pending(until: Fraction | None) -> None:
            while source.pending:
                pkt = source.pending[0]
                t = pkt.dts if pkt.dts is not None else pkt.pts
                if until is not None and t is not None and pkt.time_base and t * pkt.time_base > until:
                    return
                source.pending.popleft()
                pkt.stream = omap[pkt.stream.index]
                out.mux(pkt)

        def mux_video(packets: list[Any]) -> None:
            nonlocal last_dts
            for packet in packets:
                packet.dts = last_dts = sane_dts(packet.pts, packet.dts, last_dts, step)
                out.mux(packet)

        for y in frames:
            interrupt.check()
            if vout is None:
                vout = add_video_stream(
                    out,
                    encode,
                    width=int(y.shape[-1]),
                    height=int(y.shape[-2]),
                    rate=source.rate,
                    time_base=source.time_base,
                    colour=out_colour,
                    sample_aspect_ratio=source.sample_aspect_ratio,
                )
                for s in source.copy_streams:
                    omap[s.index] = out.add_stream_from_template(s)
                    _copy_tags(s, omap[s.index])
                if source.video_stream is not None:
                    _copy_tags(source.video_stream, vout)
                if source.container is not None:
                    _copy_tags(source.container, out)
            frame = source.converter.to_frame(y, pix_fmt, src_size=source.size)
            if not source.pts:
                raise RuntimeError("the model returned more frames than were decoded")
            pts = source.pts.popleft()
            if pts is None or (last_pts is not None and pts <= last_pts):
                pts = 0 if last_pts is None else last_pts + step
            last_pts = pts
            frame.pts = pts
            frame.time_base = source.time_base
            mux_video(vout.encode(frame))
            n += 1
            mux_pending(pts * source.time_base)
            if on_frame is not None:
                on_frame(n)
        if vout is None:
            raise ValueError("no video frames were decoded")
        if source.pts:
            raise RuntimeError(f"the model returned {n} frames for {n + len(source.pts)} decoded")
        mux_video(vout.encode(None))
        mux_pending(None)
    return n
