"""YUV, grey and integer RGB clips through the real filters under vspipe: output format, size, pixels (against the
same calls made directly) and frame properties (vspipe's --json) round trip. A .vpy calls core.nystra (the shim)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import vapoursynth as vs
from vs_patterns import pattern

from vsnystra.vs.filters import RVRT, SwinIR, Uformer

core = vs.core
VSPIPE = Path(sys.executable).parent / "vspipe"
REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS_DIR = Path(__file__).resolve().parent

SCRIPT = """
import sys
import vapoursynth as vs
from vapoursynth import core

sys.path.insert(0, {tests!r})
from vs_patterns import pattern

W, H, N = int(w), int(h), int(frames)
src = pattern(getattr(vs, fmt), W, H, N, matrix=matrix)
if matrix_unset == "1":
    src = src.std.RemoveFrameProps("_Matrix")
out = src
for name in filter(None, filters.split(",")):
    out = getattr(core.nystra, name)(out, device="cpu")
    assert out.format.id == src.format.id, (name, out.format.name)
out.set_output()
"""


def vspipe(tmp_path: Path, **args: object) -> tuple[bytes, list[dict[str, object]]]:
    """Run the script with ``args`` (vspipe --arg); returns the raw frames (stdout) and each frame's properties.

    PYTHONPATH is this checkout, so the shim (whichever is installed) calls this checkout's filters."""
    if not VSPIPE.exists():
        pytest.fail(f"{VSPIPE} missing; fix: run scripts/setup.sh")
    script = tmp_path / "formats.vpy"
    script.write_text(textwrap.dedent(SCRIPT.format(tests=str(TESTS_DIR))))
    cmd = [str(VSPIPE), "-j", str(tmp_path / "props.json")]
    for key, value in args.items():
        cmd += ["-a", f"{key}={value}"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run([*cmd, str(script), "-"], cwd=tmp_path, capture_output=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    return proc.stdout, json.loads((tmp_path / "props.json").read_text())


def raw_frames(data: bytes, fmt: vs.VideoFormat, width: int, height: int) -> list[list[np.ndarray]]:
    """vspipe's raw output: per frame, each plane's rows without padding, samples little-endian; RGB planes come in
    G, B, R order (FFmpeg's gbrp) and are returned as R, G, B."""
    dtype = np.dtype(np.uint8 if fmt.bytes_per_sample == 1 else "<u2")
    sizes = [
        (height >> (fmt.subsampling_h if p else 0), width >> (fmt.subsampling_w if p else 0))
        for p in range(fmt.num_planes)
    ]
    frame_bytes = sum(h * w for h, w in sizes) * fmt.bytes_per_sample
    assert len(data) % frame_bytes == 0, f"{len(data)} bytes is not a whole number of {frame_bytes}-byte frames"
    frames = []
    for start in range(0, len(data), frame_bytes):
        flat = np.frombuffer(data[start : start + frame_bytes], dtype=dtype)
        planes, pos = [], 0
        for h, w in sizes:
            planes.append(flat[pos : pos + h * w].reshape(h, w))
            pos += h * w
        frames.append([planes[2], planes[0], planes[1]] if fmt.color_family == vs.RGB else planes)
    return frames


CASES = [("YUV420P8", 16, 16, 2), ("YUV420P10", 48, 32, 2), ("GRAY8", 17, 31, 2), ("RGB24", 131, 129, 1)]


@pytest.mark.parametrize(("fmt", "w", "h", "length"), CASES)
def test_vspipe_all_three_filters_round_trip_format_size_pixels_and_props(
    tmp_path: Path, fmt: str, w: int, h: int, length: int
) -> None:
    """Uformer, then RVRT (sigma estimated), then SwinIR x2 on one clip: each returns the input's format."""
    data, props = vspipe(
        tmp_path, fmt=fmt, w=w, h=h, frames=length, matrix="709", matrix_unset=0, filters="Uformer,RVRT,SwinIR"
    )
    src = pattern(getattr(vs, fmt), w, h, length)
    direct = SwinIR(RVRT(Uformer(src, device="cpu"), device="cpu"), device="cpu")
    assert (direct.format.id, direct.width, direct.height) == (src.format.id, 2 * w, 2 * h)
    frames = raw_frames(data, direct.format, 2 * w, 2 * h)
    assert len(frames) == len(props) == length
    for n, (planes, got) in enumerate(zip(frames, props, strict=True)):
        f = direct.get_frame(n)
        for p, plane in enumerate(planes):
            want = np.asarray(f[p]).astype(np.int64)
            diff = np.abs(plane.astype(np.int64) - want)
            assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (n, p, diff.max(), (diff > 0).mean())
        source = src.get_frame(n).props
        for key in ("label", "_Primaries", "_Transfer", "_Matrix", "_ChromaLocation"):
            if key in source:
                want_prop = source[key]
                assert got[key] == (want_prop if isinstance(want_prop, str) else int(want_prop)), key
        assert got["nystra_model"] == "swinir-x2-small.pth" and got["nystra_device"] == "cpu"
        assert 0 <= float(got["nystra_sigma"]) <= 30  # RVRT's per-scene estimate, carried through SwinIR


@pytest.mark.slow
def test_vspipe_swinir_720x576_yuv420p8_with_the_sd_default_matrix(tmp_path: Path) -> None:
    """One PAL frame (no _Matrix: BT.601/470BG both ways) through SwinIR x2 (about 20 s on one core); Uformer and
    RVRT run 720x576 directly (test_filters_formats.py)."""
    data, props = vspipe(
        tmp_path, fmt="YUV420P8", w=720, h=576, frames=1, matrix="470bg", matrix_unset=1, filters="SwinIR"
    )
    out_fmt = core.get_video_format(vs.YUV420P8)
    (planes,) = raw_frames(data, out_fmt, 1440, 1152)
    src = pattern(vs.YUV420P8, 720, 576, 1, matrix="470bg")
    upscaled = core.resize.Bicubic(src, width=1440, height=1152).get_frame(0)
    for p, plane in enumerate(planes):
        assert np.abs(plane.astype(np.float64) - np.asarray(upscaled[p])).mean() < 0.05 * 255, p  # the picture
    (got,) = props
    assert "_Matrix" not in got and got["label"] == "keep-me" and got["nystra_model"] == "swinir-x2-small.pth"
