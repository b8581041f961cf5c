"""``vsnystra restore`` on awkward media and user mistakes: checks before any work, one-frame files, truncated and
interlaced inputs (issue 20). A stand-in identity model keeps these fast."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from test_cli import FakeModel, probe

from vsnystra.cli import main as cli_main
from vsnystra.cli import model as cli_model
from vsnystra.cli.pipeline import sane_dts


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeModel:
    m = FakeModel()

    def load(settings: cli_model.Options) -> cli_model.LoadedModel:
        return cli_model.LoadedModel(torch.nn.Identity(), "fake", 1, torch.device("cpu"), torch.float32, m)

    monkeypatch.setattr(cli_model, "load", load)
    return m


def write_video(path: Path, n: int, *, w: int = 64, h: int = 48, rate: int = 25, fmt: str | None = None) -> Path:
    """n frames of H.264 as ffmpeg's defaults write them (an .mp4 gets the 1/12800 time base)."""
    rng = np.random.default_rng(3)
    with av.open(str(path), "w", format=fmt) as out:
        v = out.add_stream("libx264", rate=rate, options={"preset": "ultrafast"})
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            f.pts = i
            f.time_base = Fraction(1, rate)
            for p in v.encode(f):
                out.mux(p)
        for p in v.encode(None):
            out.mux(p)
    return path


# ---------------------------------------------------------------- one-frame files


def test_an_uninitialised_dts_is_replaced() -> None:
    assert sane_dts(32768, 199004925949870788, None, 512) == 32768  # libx265's dts for a lone frame
    assert sane_dts(32768, -7234017283807667236, None, 512) == 32768
    assert sane_dts(33280, 32256, 31744, 512) == 32256  # a plausible reordering dts is kept
    assert sane_dts(33280, 31744, 31744, 512) == 32256  # not after the previous one: the next frame's
    assert sane_dts(None, 5, None, 1) == 5


@pytest.mark.parametrize("container", ["mkv", "mp4"])
def test_one_frame_mp4_with_the_default_x265(container: str, tmp_path: Path, fake: FakeModel) -> None:
    src = write_video(tmp_path / "one.mp4", 1)
    for attempt in range(3):  # the dts libx265 hands out is uninitialised memory: try more than once
        out = tmp_path / f"out{attempt}"
        assert cli_main.main(["restore", str(src), "-o", str(out), "--container", container]) == 0
        info = probe(out / f"one.{container}")
        assert (info["frames"], info["pix_fmt"]) == (1, "yuv420p10le")
