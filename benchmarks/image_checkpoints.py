"""Score image checkpoints (SwinIR x2, Uformer denoiser) on training-folder images: which snapshot of a run to ship.

    .venv/bin/python benchmarks/image_checkpoints.py models/swinir-x2-small.pth runs/swinir-leg2/last.pt
    .venv/bin/python benchmarks/image_checkpoints.py --task denoise models/uformer-denoise-small.pth runs/x/last.pt

Images: ../shared/data/train/Urban100 (img_001-012, never evaluation data; a fine-tuning leg that trains on
stills/ only leaves them unseen by that leg), centre crops (192 px HR side for SR, 256 px for denoising). SR: LR
by MATLAB-compatible bicubic /2 with 8-bit rounding (as the Set5 LR files), Y-PSNR with a 2-pixel border, the
project's convention. Denoise: Gaussian noise at sigma 15/25/50 from torch.Generator seeded 0, RGB PSNR, output
clipped. Exported checkpoints (.pth) and
training states (.pt) both work. 1 thread.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch

import vsnystra
from vsnystra.training.data import list_images, read_image
from vsnystra.training.degrade import imresize
from vsnystra.training.metrics import psnr

TRAIN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train" / "Urban100"
CROPS = {"sr": 192, "denoise": 256}  # denoise: the bundled Uformer takes multiples of 128


def _images(crop: int) -> list[torch.Tensor]:
    out = []
    for path in list_images(TRAIN):
        img = read_image(path).float() / 255
        h, w = img.shape[-2:]
        y0, x0 = (h - crop) // 2, (w - crop) // 2
        out.append(img[:, y0 : y0 + crop, x0 : x0 + crop])
    return out


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10 * math.log10(float(((a - b) ** 2).mean()))


def _load(path: Path) -> Any:
    if path.suffix == ".pt":
        return vsnystra.load_model(torch.load(path, map_location="cpu", weights_only=False)["model"])
    return vsnystra.load_model(str(path))


def score_sr(model: Any, images: list[torch.Tensor]) -> list[float]:
    vals = []
    for hr in images:
        lr = imresize(hr, 0.5, uint8=True)
        with torch.no_grad():
            sr = model(lr[None]).clamp(0, 1)[0]
        vals.append(psnr(sr, hr, crop=2, y_channel=True))  # 8-bit levels, as quality.py and peers.py score SR
    return [sum(vals) / len(vals)]


def score_denoise(model: Any, images: list[torch.Tensor]) -> list[float]:
    g = torch.Generator().manual_seed(0)
    means = []
    for sigma in (15, 25, 50):
        vals = []
        for img in images:
            noisy = img + torch.randn(img.shape, generator=g) * sigma / 255
            with torch.no_grad():
                out = model(noisy[None]).clamp(0, 1)[0]
            vals.append(_psnr(out, img))
        means.append(sum(vals) / len(vals))
    return means


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--task", choices=("sr", "denoise"), default="sr")
    args = ap.parse_args()
    torch.set_num_threads(1)
    images = _images(CROPS[args.task])
    if args.task == "sr":
        head, score = "| checkpoint | x2 Y-PSNR |\n|---|---|", score_sr
    else:
        head, score = "| checkpoint | sigma 15 | sigma 25 | sigma 50 |\n|---|---|---|---|", score_denoise
    print(head, flush=True)
    for path in args.checkpoints:
        model = _load(path).eval()
        print(f"| {path} | " + " | ".join(f"{v:.2f}" for v in score(model, images)) + " |", flush=True)


if __name__ == "__main__":
    main()
