"""The example pipelines end to end: vspipe (core.nystra via the shim) | ffmpeg / x265, checked with ffprobe."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SHARED = ROOT.parent / "shared"
SWINIR = SHARED / "fixtures" / "parity" / "swinir_classical_x2.pth"
RVRT_SR = SHARED / "fixtures" / "parity" / "rvrt_sr_small.pth"


def _vspipe() -> str | None:
    local = Path(sys.executable).parent / "vspipe"
    return str(local) if local.is_file() else shutil.which("vspipe")


VSPIPE = _vspipe()
pytestmark = [
    pytest.mark.skipif(VSPIPE is None, reason="vspipe is not installed"),
    pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe (ffmpeg) is not installed"),
    pytest.mark.skipif(not SWINIR.is_file(), reason="../shared/fixtures/parity is missing"),
]


def run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = env if env is not None else {**os.environ, "VSPIPE": str(VSPIPE), "X265_PRESET": "ultrafast"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def probe(path: Path) -> dict[str, object]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height,nb_read_frames,pix_fmt,codec_name",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout)["streams"][0]


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_upscale_through_ffmpeg_libx265(tmp_path: Path) -> None:
    out = tmp_path / "up.mkv"
    args = [f"model={SWINIR}", "width=64", "height=48", "frames=3", "attention=exact"]
    run([str(EXAMPLES / "encode_ffmpeg.sh"), "examples/upscale.vpy", str(out), *args])
    s = probe(out)
    assert (s["width"], s["height"], int(s["nb_read_frames"])) == (128, 96, 3)
    assert s["codec_name"] == "hevc" and s["pix_fmt"] == "yuv420p10le"


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "vspipe").exists(), reason="no .venv/bin/vspipe in this checkout")
def test_the_encode_scripts_find_the_checkouts_vspipe_from_the_repository_root(tmp_path: Path) -> None:
    """No VSPIPE, and no vspipe on PATH: the script takes .venv/bin/vspipe (what scripts/setup.sh installs)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VSPIPE", "VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PATH=os.defpath, X265_PRESET="ultrafast")
    out = tmp_path / "up.mkv"
    args = ["width=32", "height=24", "frames=2", "attention=exact"]  # the bundled default model
    run([str(EXAMPLES / "encode_ffmpeg.sh"), "examples/upscale.vpy", str(out), *args], env=env)
    s = probe(out)
    assert (s["width"], s["height"], int(s["nb_read_frames"])) == (64, 48, 2)


def test_the_readme_vpy_example_runs_with_what_setup_installs(tmp_path: Path) -> None:
    """The README's first .vpy, as written (the input name aside), through vspipe with only what setup installs."""
    import re

    import av
    import numpy as np

    block = re.search(r"```python\n(# restore\.vpy.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    assert block is not None, "README.md lost its restore.vpy example"
    clip = tmp_path / "input.mkv"
    with av.open(str(clip), "w") as out:
        v = out.add_stream("ffv1", rate=25)
        v.width, v.height, v.pix_fmt = 32, 32, "yuv444p"
        for i in range(3):
            f = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, np.uint8), format="rgb24")
            for p in v.encode(f.reformat(format="yuv444p")):
                out.mux(p)
        for p in v.encode(None):
            out.mux(p)
    script = tmp_path / "restore.vpy"
    script.write_text(block.group(1).replace('"input.mkv"', repr(str(clip))))
    shutil.copyfile(EXAMPLES / "avsource.py", tmp_path / "avsource.py")  # as the README says
    proc = run([str(VSPIPE), "-c", "y4m", str(script), str(tmp_path / "out.y4m")])
    assert (tmp_path / "out.y4m").read_bytes().count(b"FRAME") == 3, proc.stderr


@pytest.mark.skipif(shutil.which("x265") is None, reason="x265 is not installed")
def test_upscale_through_x265_cli(tmp_path: Path) -> None:
    out = tmp_path / "up.hevc"
    args = [f"model={SWINIR}", "width=160", "height=120", "frames=2", "attention=exact"]
    run([str(EXAMPLES / "encode_x265.sh"), "examples/upscale.vpy", str(out), *args])
    s = probe(out)
    assert (s["width"], s["height"], int(s["nb_read_frames"])) == (320, 240, 2)
    assert s["pix_fmt"] == "yuv420p10le"


def test_restore_script_evaluates_with_rvrt() -> None:
    proc = run(
        [
            str(VSPIPE),
            "--info",
            "examples/restore.vpy",
            "-a",
            f"model={RVRT_SR}",
            "-a",
            "width=48",
            "-a",
            "height=40",
            "-a",
            "frames=4",
        ]
    )
    info = proc.stdout
    assert "Width: 192" in info and "Height: 160" in info and "Frames: 4" in info, info


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_demo_shows_vspipes_progress_and_tags_the_matrix_it_encodes(tmp_path: Path) -> None:
    env = {**os.environ, "FRAMES": "2", "WIDTH": "64", "HEIGHT": "48", "OUT": str(tmp_path), "VSPIPE": str(VSPIPE)}
    proc = run(["bash", str(ROOT / "scripts" / "demo.sh")], env=env)
    assert "Frame: " in proc.stderr and "Output 2 frames" in proc.stderr, proc.stderr  # vspipe --progress
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=color_space,color_range",
            "-of",
            "json",
            str(tmp_path / "demo.mkv"),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(out.stdout)["streams"][0] == {"color_space": "bt709", "color_range": "tv"}
