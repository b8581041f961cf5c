"""End to end under vspipe: a plain .vpy (no import of vsnystra, no LoadPlugin) that calls core.nystra must
produce a clean Y4M stream on stdout, with nothing else mixed in."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

VSPIPE = Path(sys.executable).parent / "vspipe"
REPO_ROOT = Path(__file__).resolve().parents[1]
PARITY_DIR = REPO_ROOT.parent / "shared" / "fixtures" / "parity"


def parse_y4m(data: bytes) -> tuple[dict[str, str], int]:
    """Strictly parse a 4:2:0 or 4:4:4 8-bit Y4M stream; return (header fields, frame count)."""
    assert data.startswith(b"YUV4MPEG2 "), f"stdout does not start with a Y4M header: {data[:80]!r}"
    end = data.index(b"\n")
    fields = {tok[:1].decode(): tok[1:].decode() for tok in data[10:end].split(b" ") if tok}
    width, height = int(fields["W"]), int(fields["H"])
    chroma = fields.get("C", "420")
    sizes = {"420": width * height * 3 // 2, "420jpeg": width * height * 3 // 2, "444": width * height * 3}
    assert chroma in sizes, f"unexpected chroma {chroma}"
    frame_bytes = sizes[chroma]
    pos, frames = end + 1, 0
    while pos < len(data):
        assert data[pos : pos + 5] == b"FRAME", f"garbage at byte {pos}: {data[pos : pos + 40]!r}"
        pos = data.index(b"\n", pos) + 1 + frame_bytes
        assert pos <= len(data), "truncated frame"
        frames += 1
    return fields, frames


def run_vspipe(script: Path, tmp_path: Path) -> subprocess.CompletedProcess[bytes]:
    if not VSPIPE.exists():
        pytest.fail(f"{VSPIPE} missing; fix: run scripts/setup.sh")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [str(VSPIPE), "-c", "y4m", str(script), "-"], cwd=tmp_path, capture_output=True, timeout=240, env=env
    )


def test_vspipe_bridge_stream_is_clean(tmp_path: Path) -> None:
    """A stand-in implementation that prints: the print must land on stderr, never in the video stream."""
    script = tmp_path / "bridge.vpy"
    script.write_text(
        textwrap.dedent(
            """
            import sys, types
            import vapoursynth as vs
            from vapoursynth import core

            fake = types.ModuleType("vsnystra.vs.filters")
            def Uformer(clip, **kw):
                print("noise from the implementation")
                return clip.std.Invert()
            fake.Uformer = Uformer
            sys.modules["vsnystra.vs.filters"] = fake

            clip = core.std.BlankClip(format=vs.RGBS, width=32, height=24, length=5)
            out = core.nystra.Uformer(clip, tile=[16, 16])
            out.resize.Bicubic(format=vs.YUV420P8, matrix_s="709").set_output()
            """
        )
    )
    proc = run_vspipe(script, tmp_path)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    fields, frames = parse_y4m(proc.stdout)
    assert (fields["W"], fields["H"], frames) == ("32", "24", 5)
    assert b"noise from the implementation" in proc.stderr


def test_vspipe_error_is_reported_not_crashed(tmp_path: Path) -> None:
    script = tmp_path / "error.vpy"
    script.write_text(
        textwrap.dedent(
            """
            import sys, types
            import vapoursynth as vs
            from vapoursynth import core

            fake = types.ModuleType("vsnystra.vs.filters")
            def RVRT(clip, **kw):
                raise RuntimeError("marker-9931")
            fake.RVRT = RVRT
            sys.modules["vsnystra.vs.filters"] = fake
            core.nystra.RVRT(core.std.BlankClip(format=vs.RGBS, length=2)).set_output()
            """
        )
    )
    proc = run_vspipe(script, tmp_path)
    assert proc.returncode != 0 and proc.stdout == b""
    assert re.search(rb"nystra\.RVRT: RuntimeError: marker-9931", proc.stderr), proc.stderr


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("core.nystra.RVRT(clip, sigma=-1)", "nystra.RVRT: sigma must be between 0 and 255"),
        ("core.nystra.SwinIR(clip, window=3)", "nystra.SwinIR: window 3 is smaller than the window [8, 8]"),
        ("core.nystra.Uformer(clip, tile=[0, 64])", "nystra.Uformer: tile [0, 64] mixes 0 (no tiling) and a size"),
    ],
)
def test_a_settings_mistake_is_at_most_three_lines_on_vspipes_stderr(call: str, message: str, tmp_path: Path) -> None:
    """The real filters under vspipe (this checkout's vsnystra): the message once, no traceback, a failing exit."""
    script = tmp_path / "mistake.vpy"
    script.write_text(
        "import vapoursynth as vs\nfrom vapoursynth import core\n"
        "clip = core.std.BlankClip(format=vs.RGBS, width=64, height=64, length=2)\n"
        f"{call}.set_output()\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env["PYTHONPATH"] = str(REPO_ROOT)  # the checkout under test, wherever the venv's vsnystra points
    proc = subprocess.run(
        [str(VSPIPE), "--info", str(script), "-"], cwd=tmp_path, capture_output=True, timeout=240, env=env
    )
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0 and proc.stdout == b"", err
    assert len(err.strip().splitlines()) <= 3 and err.count(message) == 1 and "Traceback" not in err, err


def test_a_settings_mistake_stays_a_catchable_vs_error_outside_a_script_host() -> None:
    import vapoursynth as vs

    clip = vs.core.std.BlankClip(format=vs.RGBS, width=64, height=64, length=2)
    with pytest.raises(vs.Error, match=r"nystra\.RVRT: sigma must be between 0 and 255"):
        vs.core.nystra.RVRT(clip, sigma=-1)


def test_vspipe_swinir_y4m(tmp_path: Path) -> None:
    """The real SwinIR filter (vsnystra.vs.filters) on a tiny clip with the parity checkpoint."""
    model = PARITY_DIR / "swinir_classical_x2.pth"
    if not model.is_file():
        pytest.fail(f"{model} missing: shared/ must sit next to the checkout")
    if not (REPO_ROOT / "vsnystra" / "vs" / "filters.py").is_file():
        pytest.fail("vsnystra/vs/filters.py does not exist yet: the nystra filters have not landed")
    script = tmp_path / "swinir.vpy"
    script.write_text(
        textwrap.dedent(
            f"""
            import vapoursynth as vs
            from vapoursynth import core

            clip = core.std.BlankClip(format=vs.RGBS, width=24, height=16, length=3, color=[0.2, 0.5, 0.8])
            up = core.nystra.SwinIR(clip, model={str(model)!r}, device="cpu")
            assert (up.width, up.height, up.num_frames) == (48, 32, 3), (up.width, up.height, up.num_frames)
            up.resize.Bicubic(format=vs.YUV420P8, matrix_s="709").set_output()
            """
        )
    )
    proc = run_vspipe(script, tmp_path)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    fields, frames = parse_y4m(proc.stdout)
    assert (fields["W"], fields["H"], frames) == ("48", "32", 3)
