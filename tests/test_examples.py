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


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VSPIPE": str(VSPIPE), "X265_PRESET": "ultrafast"}
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
