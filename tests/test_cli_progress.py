"""``vsnystra restore``'s progress (issue 20): the total is what will really be decoded (variable frame rate,
one frame per field), and no ETA is shown before it means something. A stand-in identity model keeps these fast."""

from __future__ import annotations

import io
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from test_cli_checks import fake, write_tff  # noqa: F401  (fake: the fixture used below)

from vsnystra.cli import main as cli_main
from vsnystra.cli.progress import ProgressBar

pytestmark = pytest.mark.usefixtures("fake")


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_no_eta_until_the_rate_since_the_first_frame_means_something() -> None:
    clock = Clock()
    bar = ProgressBar("x", 100, stream=io.StringIO(), clock=clock)
    assert bar.render().endswith("ETA --:--")
    clock.t = 30.0  # model loading and the first chunk: 30 s for the first frame
    bar.set(1)
    assert bar.render().endswith("ETA --:--")
    clock.t = 31.0
    bar.set(4)  # 3 % of the total: too little to tell
    assert bar.eta() is None
    clock.t = 35.0
    bar.set(21)  # 20 frames in 5 s since the first: 4 fps, 79 frames left
    assert bar.eta() == pytest.approx(79 / 4)
    assert bar.render().endswith("ETA 00:20")  # from the start it would have said 02:12
    unknown = ProgressBar("y", None, stream=io.StringIO(), clock=clock)
    unknown.set(50)
    clock.t = 99.0
    unknown.set(60)
    assert unknown.eta() is None


def write_vfr(path: Path) -> Path:
    """Six frames at irregular times (pts 0, 1, 2, 3, 20, 21 in 1/25 s): the duration says 22 frames at 25 fps."""
    with av.open(str(path), "w") as out:
        v = out.add_stream("ffv1", rate=25)
        v.width, v.height, v.pix_fmt = 32, 32, "yuv444p"
        v.time_base = Fraction(1, 25)
        for i, pts in enumerate([0, 1, 2, 3, 20, 21]):
            img = np.full((32, 32, 3), 30 * i, np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv444p")
            f.pts, f.time_base = pts, Fraction(1, 25)
            for p in v.encode(f):
                out.mux(p)
        for p in v.encode(None):
            out.mux(p)
    return path


def last_bar(err: str) -> str:
    lines = [line for line in err.splitlines() if " frames " in line and "%" in line]
    assert lines, err
    return lines[-1]


@pytest.mark.parametrize("kind", ["vfr", "field"])
def test_the_bar_counts_the_frames_really_decoded(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if kind == "vfr":
        src, extra, frames = write_vfr(tmp_path / "vfr.mkv"), [], 6
    else:
        src, extra, frames = write_tff(tmp_path / "tff.mkv", n=5), ["--deinterlace", "field"], 10
    argv = ["restore", str(src), "-o", str(tmp_path / "o"), "--codec", "ffv1", "--segment-frames", "4", *extra]
    assert cli_main.main(argv) == 0
    line = last_bar(capsys.readouterr().err)
    assert re.search(rf"100\.0% {frames}/{frames} frames ", line), line
    with av.open(str(tmp_path / "o" / src.name)) as c:
        assert sum(1 for _ in c.decode(video=0)) == frames
