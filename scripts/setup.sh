#!/usr/bin/env bash
# Set up vsnystra from a checkout: Python >= 3.12 venv in .venv, the package (editable, with the dev extra), the
# native VapourSynth shim (core.nystra, autoloaded), ffmpeg + x265, and `vapoursynth config` so that
# .venv/bin/vspipe works without activating the venv. Idempotent: re-running only repairs what is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
say() { echo "[setup] $*" >&2; }
die() { echo "[setup] ERROR: $*" >&2; exit 1; }

is_good_python() {  # usable interpreter >= 3.12 with a shared libpython (libvsscript needs one)
    "$1" -c 'import sys, sysconfig; sys.exit(0 if sys.version_info >= (3, 12) and sysconfig.get_config_var("Py_ENABLE_SHARED") else 1)' \
        >/dev/null 2>&1
}

find_python() {
    local candidates=()
    [[ -n "${PYTHON:-}" ]] && candidates+=("$PYTHON")
    candidates+=(python3.12 python3.13)
    local roots=()
    if command -v pyenv >/dev/null 2>&1; then roots+=("$(pyenv root 2>/dev/null || true)"); fi
    roots+=("${PYENV_ROOT:-}" "$HOME/.pyenv" /root/.pyenv)
    local r v
    for r in "${roots[@]}"; do
        [[ -n "$r" && -d "$r/versions" ]] || continue
        for v in "$r"/versions/3.12* "$r"/versions/3.13* "$r"/versions/3.1[4-9]*; do
            [[ -x "$v/bin/python" ]] && candidates+=("$v/bin/python")
        done
    done
    candidates+=(python3)
    local c
    for c in "${candidates[@]}"; do
        if is_good_python "$c"; then
            "$c" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    return 1
}

# 0. system packages when missing: ffmpeg + x265 (the demo's encoders), a C compiler (the native shim)
missing=()
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v x265 >/dev/null 2>&1 || missing+=(x265)
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
if [[ ${#missing[@]} -gt 0 ]]; then
    SUDO=""
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "missing ${missing[*]} and not root; fix: apt-get install ${missing[*]} as root"
        SUDO="sudo -n"
    fi
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get; fix: install them with your package manager"
    say "installing Debian packages: ${missing[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q -o DPkg::Lock::Timeout=600 >&2
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 -o Dpkg::Use-Pty=0 \
        --no-install-recommends "${missing[@]}" >&2
fi

# 1. virtual environment
if [[ -x "$VENV/bin/python" ]] && is_good_python "$VENV/bin/python"; then
    say "reusing $VENV ($("$VENV/bin/python" -V 2>&1))"
else
    PY="$(find_python)" || die "no Python >= 3.12 with a shared libpython found (tried \$PYTHON, python3.12, python3.13, pyenv versions); fix: install one, e.g. 'pyenv install 3.12', or set PYTHON=/path/to/python3.12"
    say "creating $VENV with $PY"
    "$PY" -m venv --clear "$VENV"
fi
VPY="$VENV/bin/python"

# 2. the package (editable, dev extra) and its dependencies
say "installing vsnystra[dev] (editable) into $VENV"
"$VPY" -m pip install --disable-pip-version-check -q -e "$ROOT[dev]"

# 3. the native shim, into the venv's VapourSynth plugin folder (editable installs do not run the wheel build step)
say "building the native shim"
"$VPY" -m vsnystra.vs.build_shim --install

# 5. tell libvsscript which Python to use, so .venv/bin/vspipe works without activating the venv
say "configuring VapourSynth for $VPY"
"$VENV/bin/vapoursynth" config >&2

# 6. smoke checks: plugin autoloads in Python and under vspipe
"$VPY" - <<'PY' >&2
import sys
from vapoursynth import core
names = sorted(f.name for f in core.nystra.functions())
assert {"RVRT", "SwinIR", "Uformer"} <= set(names), names
assert "vsnystra" not in sys.modules, "the plugin must load without importing vsnystra"
print("[setup] core.nystra:", ", ".join(names), file=sys.stderr)
PY
SMOKE="$(mktemp -d)"
trap 'rm -rf "$SMOKE"' EXIT
cat >"$SMOKE/smoke.vpy" <<'PY'
import vapoursynth as vs
from vapoursynth import core
assert hasattr(core, "nystra")
core.std.BlankClip(format=vs.YUV420P8, width=64, height=48, length=2).set_output()
PY
"$VENV/bin/vspipe" --info "$SMOKE/smoke.vpy" >/dev/null || die "vspipe cannot run a script that uses core.nystra; see the messages above"
say "done in $SECONDS s: .venv ready (test: scripts/test.sh)"
