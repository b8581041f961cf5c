"""Helpers for the segmented-restore tests: a tiny temporal model that runs through restore_video like RVRT, clips
with known scene cuts, and model factories that crash or stall on purpose (they also run inside Ray workers,
which receive this module by value)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import av
import numpy as np
import torch
from torch import nn

from vsnystra.archs.base import ModelInfo, RestorationModel, SizeRule
from vsnystra.cli import model as cli_model


class TinyTemporal(RestorationModel):
    """An RVRT stand-in for ``restore_video``: a random 3-D convolution plus the chunk's mean frame, so every output
    frame depends on which chunk it was computed in (a wrong temporal context changes it)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv3d(3, 3, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.2)
            self.conv.bias.zero_()
        self.info = ModelInfo(
            arch="rvrt",
            kind="video",
            variant="test",
            task="restore",
            scale=1,
            in_channels=3,
            out_channels=3,
            window=(2, 8, 8),
            size_rule=self.size_rule(),
        )

    def size_rule(self) -> SizeRule:
        return SizeRule(8, "mirror_to")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (1, T, 3, H, W)
        y = self.conv(x.transpose(1, 2)).transpose(1, 2)
        return x + 0.1 * torch.tanh(y) + 0.3 * (x.mean(dim=1, keepdim=True) - x)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread for a block (what the Ray workers of the tests run with), then as before."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tiny_loaded(chunk: int = 4, overlap: int = 2, seed: int = 0) -> cli_model.LoadedModel:
    """The stand-in loaded as ``vsnystra restore`` loads an RVRT (same restorer code, same temporal bookkeeping)."""
    model = TinyTemporal(seed).eval()
    cpu = torch.device("cpu")
    restorer = cli_model._video_restorer(model, cpu, torch.float32, chunk, overlap, None, 0, None)
    return cli_model.LoadedModel(model, "rvrt", 1, cpu, torch.float32, restorer, (chunk, overlap))


def controlled_loaded(control: str, chunk: int = 4, overlap: int = 2) -> cli_model.LoadedModel:
    """Like tiny_loaded, steered by files in ``control`` (tests change them between runs of the same workers):
    each restore touches ``started-<Ray node id>``; with ``crash`` present, the first restore after which
    ``crashed`` does not exist kills its process mid-segment; ``slow`` holds seconds to wait per frame."""
    import ray

    loaded = tiny_loaded(chunk, overlap)
    inner = loaded.restorer
    folder = Path(control)

    def restorer(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        (folder / f"started-{ray.get_runtime_context().get_node_id()}").touch()
        delay = float((folder / "slow").read_text()) if (folder / "slow").exists() else 0.0
        for i, y in enumerate(inner(frames)):
            if i == 1 and (folder / "crash").exists() and not (folder / "crashed").exists():
                (folder / "crashed").write_text(str(os.getpid()))
                os._exit(1)  # a worker lost mid-segment: no cleanup, no exception
            time.sleep(delay)
            yield y

    return dataclasses.replace(loaded, restorer=restorer)


def _pattern(shot: int, i: int, w: int, h: int) -> np.ndarray:
    """Smooth moving colour gradients; each shot has its own brightness and colours, so cuts are unmistakable."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 0.2 + 0.55 * (shot % 2)
    rgb = [
        base + 0.15 * np.sin((xx + 2 * i) / (6 + shot) + c * 2.0 + shot) * np.cos((yy - i) / (9 + c)) for c in range(3)
    ]
    return (np.clip(np.stack(rgb, axis=-1), 0, 1) * 255).astype(np.uint8)


def make_video(
    path: Path,
    n: int,
    *,
    w: int = 64,
    h: int = 48,
    cuts: Sequence[int] = (),
    codec: str = "ffv1",
    audio: bool = True,
    gop: int = 6,
) -> Path:
    """n frames at 25 fps with hard cuts at ``cuts`` (ffv1, or libx264 with B-frames and a short GOP), PCM audio."""
    with av.open(str(path), "w") as out:
        opts = {"preset": "ultrafast", "crf": "12", "g": str(gop), "x264-params": "bframes=2:b-adapt=0"}
        v = out.add_stream(codec, rate=25, options=opts if codec == "libx264" else {})
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        a = out.add_stream("pcm_s16le", rate=48000) if audio else None
        if a is not None:
            a.layout = "mono"
        shot = 0
        for i in range(n):
            shot += i in cuts
            f = av.VideoFrame.from_ndarray(_pattern(shot, i, w, h), format="rgb24").reformat(format="yuv420p")
            f.pts = i
            for p in v.encode(f):
                out.mux(p)
        for p in v.encode(None):
            out.mux(p)
        if a is not None:
            total = 48000 * n // 25
            s = (np.sin(np.arange(total) / 7.0) * 8000).astype(np.int16)
            for k in range(0, total, 960):
                af = av.AudioFrame.from_ndarray(s[None, k : k + 960].copy(), format="s16", layout="mono")
                af.sample_rate, af.pts = 48000, k
                for p in a.encode(af):
                    out.mux(p)
            for p in a.encode(None):
                out.mux(p)
    return path


def decoded(path: Path) -> tuple[list[np.ndarray], list[float], list[tuple[bytes, int | None]]]:
    """(native planes of every video frame, their times, the audio packets as (bytes, pts)) of a file."""
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
        planes = [f.to_ndarray() for f in frames]
        times = [float(f.time) for f in frames]
    with av.open(str(path)) as c:
        st = c.streams.audio
        audio = [(bytes(p), p.pts) for p in c.demux(st[0]) if p.size] if st else []
    return planes, times, audio
