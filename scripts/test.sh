#!/usr/bin/env bash
# The project's test command: lint, format check, type check, then the whole pytest suite.
# Every step runs (so one report shows all problems); the exit status is non-zero if any step failed,
# including pytest's exit 5 ("no tests collected").
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
[[ -x "$VENV/bin/python" ]] || { echo "[test] ERROR: $VENV missing; fix: run scripts/setup.sh first" >&2; exit 2; }
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export MKL_NUM_THREADS="${MKL_NUM_THREADS:-2}"

failed=()
step() {
    local name="$1"; shift
    echo "[test] $name: $*" >&2
    local start=$SECONDS
    "$@"
    local rc=$?
    echo "[test] $name: exit $rc ($((SECONDS - start)) s)" >&2
    [[ $rc -eq 0 ]] || failed+=("$name (exit $rc)")
}

step ruff-check "$VENV/bin/ruff" check .
step ruff-format "$VENV/bin/ruff" format --check .
step mypy "$VENV/bin/mypy" vsnystra/
step pytest "$VENV/bin/python" -m pytest -q --durations=15 "$@"

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "[test] FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "[test] all checks passed" >&2
