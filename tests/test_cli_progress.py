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


# ---------------------------------------------------------------- one writer per output file


def test_an_output_lock_is_exclusive_names_its_holder_and_goes_with_its_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import os
    import socket

    from vsnystra.cli.outlock import OutputLock, lock_path

    final = tmp_path / "out.mkv"
    first, second = OutputLock(final), OutputLock(final)
    assert first.acquire()
    assert not second.acquire()  # another descriptor: as another process would see it
    assert second.describe_holder() == f"another vsnystra restore (pid {os.getpid()} on {socket.gethostname()})"
    first.release()
    assert not lock_path(final).exists()
    lock_path(final).write_text(f"999999999@{socket.gethostname()}\n")  # left by a killed run: nobody holds it
    with caplog.at_level("INFO"):
        assert second.acquire()
    assert "taking over the lock of pid 999999999" in caplog.text
    second.release()


def test_a_second_restore_skips_the_file_another_process_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    import subprocess
    import sys

    from test_cli_checks import write_video

    src = write_video(tmp_path / "a.mkv", 3)
    out = tmp_path / "o"
    hold = (
        "import sys, time; from pathlib import Path; from vsnystra.cli.outlock import OutputLock; "
        "assert OutputLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out / "a.mkv")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert cli_main.main(["restore", str(src), "-o", str(out), "--codec", "ffv1"]) == 0
        assert f"skipped, another vsnystra restore (pid {holder.pid} on " in caplog.text
        assert "0 done, 1 skipped, 0 failed" in capsys.readouterr().err and not (out / "a.mkv").exists()
    finally:
        holder.kill()
        holder.wait()
    assert cli_main.main(["restore", str(src), "-o", str(out), "--codec", "ffv1"]) == 0  # the dead holder's lock
    assert (out / "a.mkv").is_file() and not (out / ".a.mkv.lock").exists()


def test_a_script_output_another_process_writes_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from vsnystra.cli.outlock import OutputLock

    script = tmp_path / "s.vpy"
    script.write_text(
        "import vapoursynth as vs\nvs.core.std.BlankClip(format=vs.YUV420P8, width=32, height=32, length=2)"
        ".set_output()\n"
    )
    out = tmp_path / "o"
    held = OutputLock(out / "s.mkv")  # another descriptor: what another process holding it looks like
    assert held.acquire()
    try:
        assert cli_main.main(["restore", str(script), "-o", str(out), "--codec", "ffv1"]) == 0
        assert "skipped, another vsnystra restore (pid" in caplog.text and not (out / "s.mkv").exists()
    finally:
        held.release()
    assert cli_main.main(["restore", str(script), "-o", str(out), "--codec", "ffv1"]) == 0
    assert (out / "s.mkv").is_file()
