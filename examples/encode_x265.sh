#!/usr/bin/env bash
# vspipe -> x265 CLI (Main 10). x265 writes a raw HEVC stream (.hevc); mux it with ffmpeg or mkvmerge if needed.
# Usage: examples/encode_x265.sh SCRIPT.vpy OUTPUT.hevc [vspipe -a arguments, e.g. input=in.mkv model=x.pth]
# Environment: VSPIPE (default: the checkout's .venv/bin/vspipe, else vspipe on PATH),
#   X265 (default: x265), X265_PRESET (default: medium), CRF (default: 18).
# Note: x265 3.5 refuses very small Y4M frames on stdin (e.g. 64x48); 320x240 and up work.
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: $0 SCRIPT.vpy OUTPUT.hevc [name=value ...]" >&2; exit 2; }
script="$1"; output="$2"; shift 2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${VSPIPE:-}" ]]; then  # the vspipe scripts/setup.sh installed with this checkout, else the one on PATH
    if [[ -x "$ROOT/.venv/bin/vspipe" ]]; then VSPIPE="$ROOT/.venv/bin/vspipe"
    elif command -v vspipe >/dev/null; then VSPIPE=vspipe
    else echo "$0: vspipe not found: run scripts/setup.sh (installs .venv/bin/vspipe) or set VSPIPE" >&2; exit 2; fi
fi
vsargs=()
for a in "$@"; do vsargs+=(-a "$a"); done
"$VSPIPE" -c y4m "$script" - "${vsargs[@]}" \
  | "${X265:-x265}" --y4m --input - --output-depth 10 --preset "${X265_PRESET:-medium}" --crf "${CRF:-18}" \
      --log-level error --no-progress --output "$output"
