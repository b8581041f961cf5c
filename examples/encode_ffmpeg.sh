#!/usr/bin/env bash
# vspipe -> ffmpeg (libx265, 10-bit 4:2:0).
# Usage: examples/encode_ffmpeg.sh SCRIPT.vpy OUTPUT.mkv [vspipe -a arguments, e.g. input=in.mkv model=x.pth]
# Environment: VSPIPE (default: the checkout's .venv/bin/vspipe, else vspipe on PATH),
#   FFMPEG (default: ffmpeg), X265_PRESET (default: medium), CRF (default: 18).
set -euo pipefail
[[ $# -ge 2 ]] || { echo "usage: $0 SCRIPT.vpy OUTPUT.mkv [name=value ...]" >&2; exit 2; }
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
  | "${FFMPEG:-ffmpeg}" -hide_banner -loglevel error -y -f yuv4mpegpipe -i - \
      -c:v libx265 -preset "${X265_PRESET:-medium}" -crf "${CRF:-18}" -pix_fmt yuv420p10le \
      -x265-params log-level=error "$output"
