"""The planning pass over one input: frame count, timestamps, per-frame checksums and scene cuts.

One decode of the video stream ``vsnystra restore`` restores (the same stream choice and decoder settings as the
restore itself), no colour conversion. What it records lets every executor find and check its frames:

* ``decode_pts``: a frame's identity after a seek (workers seek to a segment instead of decoding from the start
  when the pts are unique and increasing);
* ``checksums``: crc32 of each decoded frame's planes; a worker compares every frame it decodes with them, so a
  seek that lands on different pictures (open GOPs, broken indexes) is detected and the segment is decoded again
  from the start of the file instead;
* ``out_pts``: the timestamp each frame gets in the output, by the single-pass rule (missing or repeated pts
  continue from the previous frame by one frame duration);
* ``cuts``: scene changes. The detector is VapourSynth's ``misc.SCDetect`` measure, the one whose
  ``_SceneChangePrev``/``_SceneChangeNext`` props the nystra filters honour: the mean absolute difference of
  the luma of neighbouring frames, on a 0-1 scale, above ``threshold`` (SCDetect's default 0.1) starts a new
  shot. Luma is measured on a copy scaled to at most 256 pixels wide (area average), so film grain and
  compression noise count for little and the pass stays cheap.
"""

from __future__ import annotations

import itertools
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from vsnystra.cli.pipeline import _open_av_source
from vsnystra.cli.preflight import FIELD_ORDERS

log = logging.getLogger(__name__)

LUMA_WIDTH = 256


@dataclass
class Scan:
    frames: int
    decode_pts: list[int | None]
    out_pts: list[int]
    checksums: list[int] | None
    cuts: list[int]
    expected: int | None = None
    exact: bool = False
    decode_errors: int = 0
    interlaced: bool = False  # tagged with a field order, or its first frame is flagged interlaced
    step: int = 1  # a frame's duration in the stream's time base

    @property
    def seekable(self) -> bool:
        known = [p for p in self.decode_pts if p is not None]
        return len(known) == len(self.decode_pts) and all(b > a for a, b in itertools.pairwise(known))


def frame_checksum(frame: av.VideoFrame) -> int | None:
    """crc32 of the frame's pixels (no line padding); None where PyAV has no ndarray view of the format."""
    try:
        arr = frame.to_ndarray()
    except (ValueError, NotImplementedError):
        return None
    return zlib.crc32(np.ascontiguousarray(arr).data)


class _Luma:
    """Downscaled 8-bit luma of frames, with one reused swscale context."""

    def __init__(self) -> None:
        self._fmt = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        w = min(LUMA_WIDTH, frame.width)
        h = max(1, round(frame.height * w / frame.width))
        g = self._fmt.reformat(frame, width=w, height=h, format="gray", interpolation=Interpolation.AREA)
        return g.to_ndarray().astype(np.float32)


def scan(src: Path, *, threshold: float, find_cuts: bool, on_frame: Callable[[int], None] | None = None) -> Scan:
    """Decode ``src`` once; ``find_cuts`` False (image models, threshold 0) skips the luma measure."""
    find_cuts = find_cuts and threshold > 0
    decode_pts: list[int | None] = []
    out_pts: list[int] = []
    sums: list[int] | None = []
    cuts: list[int] = []
    luma = _Luma()
    prev: np.ndarray | None = None
    with av.open(str(src), "r") as inp:
        source = _open_av_source(inp)
        vin = source.video_stream
        step = max(1, round(1 / (source.rate * source.time_base)))
        last: int | None = None
        errors = 0
        exact = int(vin.frames) > 0
        interlaced = int(vin.codec_context.field_order or 0) in FIELD_ORDERS
        for packet in inp.demux(vin):
            try:
                decoded = packet.decode()
            except av.FFmpegError as e:  # a damaged packet: its frame is missing, the rest still decodes
                errors += 1
                log.debug("%s: decode error at pts %s: %s", src, packet.pts, e)
                continue
            for frame in decoded:
                if not isinstance(frame, av.VideoFrame):
                    continue
                n = len(decode_pts)
                if n == 0 and int(vin.codec_context.field_order or 0) == 0:  # untagged: as the first frame says
                    interlaced = bool(frame.interlaced_frame)
                decode_pts.append(frame.pts)
                pts = frame.pts
                if pts is None or (last is not None and pts <= last):  # as pipeline._run assigns them
                    pts = 0 if last is None else last + step
                out_pts.append(pts)
                last = pts
                if sums is not None:
                    c = frame_checksum(frame)
                    if c is None:
                        log.debug("%s: %s frames have no ndarray view; frames are not checksummed", src, frame.format)
                        sums = None
                    else:
                        sums.append(c)
                if find_cuts:
                    y = luma(frame)
                    if prev is not None and prev.shape == y.shape:
                        if float(np.abs(y - prev).mean()) / 255.0 > threshold:
                            cuts.append(n)
                    elif prev is not None:  # the picture size changed: a new shot
                        cuts.append(n)
                    prev = y
                if on_frame is not None:
                    on_frame(n + 1)
    if not decode_pts:
        raise ValueError("no video frames were decoded")
    return Scan(len(decode_pts), decode_pts, out_pts, sums, cuts, source.total, exact, errors, interlaced, step)
