"""Error of the noise estimator (vsnystra.runtime.noise.estimate_sigma) on real footage with Gaussian noise added.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sigma_estimate.py                 # writes benchmarks/results/sigma.md
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sigma_estimate.py --no-write

For each clip the first ``--frames`` frames (as the filter and the command line read a scene) get white Gaussian
noise of level sigma (0-255 scale, independent per pixel and channel, seeded), are clipped to [0, 1] as a decoded
frame would be, and the estimate is compared with sigma. DAVIS 2016 480p (training clips) and Vid4 (evaluation data:
measured only; nothing in the estimator was set from it). The estimator has no constant fitted to data (its
constants are the published operators' own), so there was nothing to calibrate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from vsnystra.runtime.noise import estimate_sigma  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SETS = {"DAVIS 2016 480p (train)": DATA / "train" / "DAVIS2016_480p", "Vid4": DATA / "video" / "Vid4"}
RESULTS = ROOT / "benchmarks" / "results" / "sigma.md"


def clips(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


def load(clip: Path, frames: int) -> torch.Tensor:
    paths = sorted([*clip.glob("*.jpg"), *clip.glob("*.png")])[:frames]
    arrays = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) / 255 for p in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sigmas", default="5,10,15,20,25,30,35,40")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    sigmas = [float(s) for s in args.sigmas.split(",")]
    lines = [
        "| data | clip | " + " | ".join(f"σ {s:g}" for s in sigmas) + " | max abs error |",
        "|---|---|" + "---|" * len(sigmas) + "---|",
    ]
    summary = []
    for name, root in SETS.items():
        errors = []
        for clip in clips(root):
            clean = load(clip, args.frames)
            row = []
            for s in sigmas:
                g = torch.Generator().manual_seed(int(s * 10))
                noisy = (clean + torch.randn(clean.shape, generator=g) * s / 255).clamp(0, 1)
                est = estimate_sigma(noisy)
                row.append(est)
                errors.append(est - s)
            worst = max(abs(e - s) for e, s in zip(row, sigmas, strict=True))
            lines.append(f"| {name} | {clip.name} | " + " | ".join(f"{e:.2f}" for e in row) + f" | {worst:.2f} |")
            print(lines[-1], flush=True)
        err = np.abs(np.array(errors))
        summary.append(
            f"| {name} | {len(errors)} | {err.mean():.2f} | {err.max():.2f} | {(err <= 2).mean() * 100:.0f} % |"
        )
    table = "\n".join(lines)
    head = "| data | estimates | mean abs error | max abs error | within ±2 |\n|---|---|---|---|---|\n"
    report = (
        "# Noise estimation (RVRT denoiser without sigma)\n\n"
        f"Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sigma_estimate.py --sigmas {args.sigmas} "
        f"--frames {args.frames}`\n\n"
        "Estimator: vsnystra/runtime/noise.py (Immerkær's mask, Tai-Yang edge exclusion, Donoho's MAD, clipping "
        "exclusion). Gaussian noise added to the first frames of each clip, clipped to [0, 1]; estimates on the "
        "0-255 scale. Vid4 is measured only.\n\n" + head + "\n".join(summary) + "\n\n" + table + "\n"
    )
    print(head + "\n".join(summary))
    if not args.no_write:
        RESULTS.write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
