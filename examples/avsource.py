"""A minimal PyAV-backed VapourSynth source for the examples (no source plugin needed).

Use a real source plugin (bs.VideoSource, lsmas.LWLibavSource, ffms2.Source) when you have one: this reader
decodes sequentially and restarts from the beginning on a backward jump, which is fine for vspipe's in-order
requests and slow for random access.
"""

from __future__ import annotations

import threading
from fractions import Fraction

import av
import numpy as np
import vapoursynth as vs

core = vs.core


def _count_frames(path: str) -> tuple[int, int, int, Fraction]:
    with av.open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or Fraction(25, 1)
        n = 0
        width = height = 0
        for frame in container.decode(stream):
            width, height = frame.width, frame.height
            n += 1
    return n, width, height, Fraction(rate)


def source(path: str) -> vs.VideoNode:
    """RGBS clip of a video file, decoded with PyAV (full-range RGB as swscale converts it)."""
    for namespace, fn in (("bs", "VideoSource"), ("lsmas", "LWLibavSource"), ("ffms2", "Source")):
        if hasattr(core, namespace):
            clip = getattr(getattr(core, namespace), fn)(path)
            return core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s="709")
    num, width, height, rate = _count_frames(path)
    blank = core.std.BlankClip(
        format=vs.RGBS, width=width, height=height, length=num, fpsnum=rate.numerator, fpsden=rate.denominator
    )
    lock = threading.Lock()
    state: dict[str, object] = {"container": None, "iter": None, "next": 0}

    def restart() -> None:
        if state["container"] is not None:
            state["container"].close()  # type: ignore[attr-defined]
        container = av.open(path)
        state.update(container=container, iter=container.decode(video=0), next=0)

    def read(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        with lock:
            if state["iter"] is None or n < state["next"]:  # type: ignore[operator]
                restart()
            while True:
                frame = next(state["iter"])  # type: ignore[call-overload]
                index = state["next"]
                state["next"] = index + 1  # type: ignore[operator]
                if index == n:
                    break
            rgb = frame.to_ndarray(format="rgb48le").astype(np.float32) / 65535.0
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), rgb[..., p])
        return out

    return core.std.ModifyFrame(blank, blank, read)


def synthetic(width: int, height: int, frames: int) -> vs.VideoNode:
    """A moving gradient with texture, for trying the pipeline without a video file."""
    blank = core.std.BlankClip(format=vs.RGBS, width=width, height=height, length=frames, fpsnum=24, fpsden=1)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)

    def draw(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        shift = 2.0 * n
        planes = (
            0.5 + 0.4 * np.sin((xx + shift) / 7.0) * np.cos(yy / 5.0),
            (xx + shift) % width / width,
            yy / height,
        )
        for p in range(3):
            np.copyto(np.asarray(out[p]), planes[p].astype(np.float32))
        return out

    return core.std.ModifyFrame(blank, blank, draw)
