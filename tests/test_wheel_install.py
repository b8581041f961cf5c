"""A pip user's path: the built wheel installed into a fresh virtualenv runs a plain .vpy with ``core.nystra.RVRT``
and no model argument through vspipe, from another folder, with no checkout on sys.path.

How the venv is made clean, offline: ``python -m venv`` without system site-packages; the wheel goes in with
``pip install --no-index --no-deps``; VapourSynth is copied in as pip installed it (package, dist-info and its two
console scripts), so the wheel's shim lands in that copy's ``plugins`` folder and is the only ``nystra`` it can load;
the other dependencies (torch, numpy, PyAV) come from the project venv's site-packages through a ``.pth`` line. A
folder named by a ``.pth`` line is not a site folder, so its ``.pth`` files (the editable install of the checkout)
are never run. ``vapoursynth config`` runs with ``XDG_CONFIG_HOME`` pointing into the test's temporary folder,
as a pip user runs it in their home, without touching the project's own VapourSynth configuration.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """\
import sys
import vapoursynth as vs
from vapoursynth import core

clip = core.std.BlankClip(format=vs.RGBS, width=136, height=136, length=2, color=[0.5, 0.4, 0.3])
out = core.nystra.RVRT(clip)
import vsnystra
sys.stderr.write(f"vsnystra from {vsnystra.__file__}\\n")
out.set_output()
"""


CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    kw.setdefault("env", CLEAN_ENV)
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False, **kw)  # type: ignore[call-overload, no-any-return]


@pytest.mark.slow
def test_wheel_in_a_clean_venv_runs_a_plain_vpy_through_vspipe(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    proc = _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), "."],
        cwd=REPO_ROOT,
        env=os.environ,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = wheels.glob("vsnystra-*.whl")

    venv = tmp_path / "venv"
    assert _run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)]).returncode == 0
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    here = Path(sysconfig.get_paths()["purelib"])
    import vapoursynth

    vs_pkg = Path(vapoursynth.__file__).parent
    shutil.copytree(vs_pkg, site / "vapoursynth", ignore=shutil.ignore_patterns("nystra", "__pycache__"))
    for info in vs_pkg.parent.glob("vapoursynth-*.dist-info"):
        shutil.copytree(info, site / info.name)
    for script in ("vspipe", "vapoursynth"):  # the console scripts pip writes for VapourSynth's entry points
        body = (Path(sys.executable).parent / script).read_text().split("\n", 1)[1]
        (venv / "bin" / script).write_text(f"#!{python}\n{body}")
        (venv / "bin" / script).chmod(0o755)
    (site / "zz_dependencies.pth").write_text(f"{here}\n")
    proc = _run([str(python), "-m", "pip", "install", "-q", "--no-index", "--no-deps", str(wheel)])
    assert proc.returncode == 0, proc.stderr
    assert (site / "vapoursynth" / "plugins" / "nystra" / "libnystra.so").is_file()

    env = dict(CLEAN_ENV)
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), OMP_NUM_THREADS="1", HOME=str(tmp_path))
    proc = _run([str(venv / "bin" / "vapoursynth"), "config"], env=env)
    assert proc.returncode == 0, proc.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "plain.vpy").write_text(SCRIPT)
    proc = subprocess.run(
        [str(venv / "bin" / "vspipe"), "plain.vpy", "-"], cwd=elsewhere, env=env, capture_output=True, timeout=300
    )
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err
    assert len(proc.stdout) == 2 * 3 * 136 * 136 * 4  # two RGBS frames
    assert f"vsnystra from {site / 'vsnystra' / '__init__.py'}" in err  # the wheel's copy, not the checkout
