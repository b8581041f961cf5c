"""Score RVRT denoiser checkpoints on DAVIS *training* clips: how a run's snapshots compare, and whether they use time.

    .venv/bin/python benchmarks/rvrt_checkpoints.py models/rvrt-denoise-small.pth runs/rvrt-denoise-small/last.pt

Exported checkpoints (.pth) and training states (.pt, mixing gates folded in) both work. Clips (../shared/data/train,
never evaluation data; this is what picks a run's snapshot): camel frame 0 repeated 6 times (192 px crop) with fresh
noise in every frame vs one draw repeated (sigma 20), the same clip clean with sigma=0, and 6 moving frames of
bmx-trees and car-roundabout at sigma 10/20/30. Noise: torch.Generator seeded 0, drawn in that order. restore_video
with chunk 6, no overlap, 1 thread. PSNR in RGB on [0, 1], output clipped.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

import vsnystra
from vsnystra.runtime.video import restore_video
from vsnystra.training.data import read_image
from vsnystra.training.rvrt_temporal import fold_mixing_gates

TRAIN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train" / "DAVIS2016_480p"


def _frames(seq: str, start: int, rows: slice, cols: slice) -> torch.Tensor:
    files = sorted((TRAIN / seq).glob("*.jpg"))[start : start + 6]
    return torch.stack([read_image(p).float() / 255 for p in files])[:, :, rows, cols]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10 * math.log10(float(((a.clamp(0, 1) - b) ** 2).mean()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    static = _frames("camel", 0, slice(150, 342), slice(250, 442))[:1].expand(6, -1, -1, -1)
    fresh = static + torch.randn(static.shape, generator=g) * 20 / 255
    repeated = static + torch.randn(static.shape[1:], generator=g) * 20 / 255
    moving = [
        _frames("bmx-trees", 30, slice(100, 292), slice(300, 492)),
        _frames("car-roundabout", 10, slice(150, 342), slice(200, 392)),
    ]
    noisy = {
        (i, s): c + torch.randn(c.shape, generator=g) * s / 255 for i, c in enumerate(moving) for s in (10, 20, 30)
    }
    print("| checkpoint | static fresh | static repeated | gap | clean, sigma 0 | moving mean (6 runs) |")
    print("|---|---|---|---|---|---|")
    for path in args.checkpoints:
        if path.suffix == ".pt":
            state = torch.load(path, map_location="cpu", weights_only=False)["model"]
            model = vsnystra.load_model(fold_mixing_gates(state))
        else:
            model = vsnystra.load_model(str(path))

        def run(x: torch.Tensor, sigma: float, m: torch.nn.Module = model) -> torch.Tensor:
            out = restore_video(m, x, sigma=sigma, chunk=6, chunk_overlap=0)
            assert isinstance(out, torch.Tensor)
            return out

        with torch.no_grad():
            f, r, c = _psnr(run(fresh, 20), static), _psnr(run(repeated, 20), static), _psnr(run(static, 0), static)
            mv = sum(_psnr(run(x, s), moving[i]) for (i, s), x in noisy.items()) / len(noisy)
        print(f"| {path} | {f:.2f} | {r:.2f} | {f - r:+.2f} | {c:.2f} | {mv:.2f} |", flush=True)


if __name__ == "__main__":
    main()
