"""Choose the classical peers' strength per unit of sigma on DAVIS training clips (never on the evaluation sets).

    .venv/bin/python benchmarks/peers_calibrate.py          # writes benchmarks/results/peers_calibration.md

For ffmpeg nlmeans (s = k sigma), hqdn3d (spatial = k sigma, temporal 1.5 k sigma) and OpenCV
fastNlMeansDenoisingColoredMulti (h = hColor = k sigma), the mean RGB PSNR over the clips and sigma 10 / 20 / 30 of
each k; the best k of each is what peers_lib.py's NLMEANS_K, HQDN3D_K and OPENCV_K hold. Same noise and metric as
benchmarks/peers.py (seed CRC-32 of "DAVIS/<clip>/<sigma>"), first 8 frames, centre 256 crop, 1 thread.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import numpy as np  # noqa: E402
import peers_lib as L  # noqa: E402

log = logging.getLogger("peers")
GRID: dict[str, tuple[list[float], Callable[[np.ndarray, float, float], np.ndarray]]] = {
    "ffmpeg nlmeans, s = k sigma": (
        [0.5, 0.6, 0.75, 0.9],
        lambda x, s, k: L.ffmpeg_filter(x, L.nlmeans_vf(s, k), depth=8),
    ),
    "ffmpeg hqdn3d, spatial = k sigma": (
        [1.0, 1.5, 2.0, 2.5, 3.0],
        lambda x, s, k: L.ffmpeg_filter(x, L.hqdn3d_vf(s, k), depth=16),
    ),
    "OpenCV NLM multi, h = k sigma": (
        [0.25, 0.35, 0.5, 0.7, 1.0],
        lambda x, s, k: L.opencv_nlm_multi(x, s, k),
    ),
}


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", default="blackswan,car-roundabout,dog", help="DAVIS training sequences")
    ap.add_argument("--sigmas", default="10,20,30")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "peers_calibration.md")
    args = ap.parse_args()
    root = L.DATA / "train" / "DAVIS2016_480p"
    sigmas = [float(s) for s in args.sigmas.split(",")]
    psnr: dict[tuple[str, float], list[float]] = {}
    cases = []
    for clip in args.clips.split(","):
        paths = sorted((root / clip).glob("*.jpg"))[: args.frames]
        full = [L.read_rgb(p) for p in paths]
        clean = L.centre_crop(np.stack(full), args.crop)
        for sigma in sigmas:
            x = L.centre_crop(np.stack(L.add_noise(full, sigma, L.noise_seed("DAVIS", clip, sigma))), args.crop)
            cases.append(f"{clip} σ{sigma:g}")
            for name, (ks, fn) in GRID.items():
                for k in ks:
                    p = float(np.mean([L.psnr_rgb(o, c) for o, c in zip(fn(x, sigma, k), clean, strict=True)]))
                    psnr.setdefault((name, k), []).append(p)
                    log.info("%s σ%g %s k=%g: %.2f dB", clip, sigma, name, k, p)
    lines = [
        "# Classical peers' strengths, chosen on DAVIS training clips (benchmarks/peers_calibrate.py)",
        "",
        f"`{shlex.join(['benchmarks/peers_calibrate.py', *sys.argv[1:]])}`",
        "",
        f"First {args.frames} frames, centre {args.crop} crop, RGB PSNR (dB); the best k (bold) of each filter is the",
        "constant in benchmarks/peers_lib.py that benchmarks/peers.py uses on Vid4.",
        "",
        "| filter | k | " + " | ".join(cases) + " | mean |",
        "|---" * (len(cases) + 3) + "|",
    ]
    for name, (ks, _) in GRID.items():
        best = max(ks, key=lambda k: float(np.mean(psnr[(name, k)])))
        for k in ks:
            ps = psnr[(name, k)]
            mean = f"**{np.mean(ps):.2f}**" if k == best else f"{np.mean(ps):.2f}"
            lines.append(f"| {name} | {k:g} | " + " | ".join(f"{p:.2f}" for p in ps) + f" | {mean} |")
    args.out.write_text("\n".join(lines) + "\n")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
