"""PSNR/SSIM of the bundled defaults: exact attention vs PnP-Nystra (trained window) vs PnP-Nystra (paper mode).

    .venv/bin/python benchmarks/quality.py                       # everything (slow on CPU)
    .venv/bin/python benchmarks/quality.py --models swinir --limit 2 --modes exact,nystra
    .venv/bin/python benchmarks/quality.py --models rvrt --max-frames 6 --crop 256

Modes: ``exact`` = the model as trained; ``nystra`` = patch_attention(model, spec) at the trained window with bias
and mask kept, spec being what ``core.nystra.<Model>(clip, attention="nystra")`` and ``vsnystra restore
--attention nystra`` use for that architecture (the paper's m, iterations and t per model, per-matrix
pseudo-inverse scaling; --landmarks/--iters/--threshold/--pinv-init override);
``paper`` = the research code's mode: enlarged window, bias, shift mask and Uformer's modulator dropped, with the
paper's per-task settings (SwinIR: window 32, m 16, 2 iters, t 5; Uformer: 64, m 32, 6 iters, t 0; RVRT:
[2, 64, 64], m 32, 6 iters, t 0; batch-global pseudo-inverse scaling); ``paper-exact`` = the same enlarged,
bias-free model with exact attention: the paper's "Original", against which the paper measures its drops, so
paper-exact minus paper is the Nyström part of the paper-mode drop and exact minus paper-exact what enlarging the
window alone costs. Reference rows: bicubic (SR) and the noisy input (denoising).

Data (../shared/data next to the checkout): Set5/Set14 x2 with their MATLAB-bicubic LR files (Y-PSNR/SSIM with a
border crop of 2, RGB too); CBSD68/Kodak24 at sigma 15/25/50 (noise seeded per image, not clipped); Vid4 city and
walk at sigma 10/20 for the video denoiser. Outputs are clamped and rounded to 8 bits before the metrics.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vsnystra.archs.patch import patch_attention  # noqa: E402
from vsnystra.archs.registry import architecture, load_model  # noqa: E402
from vsnystra.attention.specs import Exact, PnPNystra  # noqa: E402
from vsnystra.runtime.image import restore_image  # noqa: E402
from vsnystra.runtime.memory import prefer_huge_pages  # noqa: E402
from vsnystra.runtime.settings import attention_spec  # noqa: E402
from vsnystra.runtime.video import restore_video  # noqa: E402
from vsnystra.training.degrade import imresize  # noqa: E402
from vsnystra.training.metrics import psnr, ssim  # noqa: E402
from vsnystra.zoo import bundled_defaults  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
MODELS = ROOT / "models"
DEFAULTS = {
    "swinir": "swinir-x2-small.pth",
    "uformer": "uformer-denoise-small.pth",
    "rvrt": "rvrt-denoise-small.pth",
}
PAPER = {arch: architecture(arch).paper_setting() for arch in DEFAULTS}


def read(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float() / 255.0


def noisy(img: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return img + torch.randn(img.shape, generator=g) * (sigma / 255.0)


def trained_window_spec(arch: str, args: argparse.Namespace) -> PnPNystra:
    """The front ends' PnP-Nystra for ``arch``, with any command-line overrides."""
    spec = attention_spec("nystra", args.landmarks, args.iters, arch)
    assert isinstance(spec, PnPNystra)
    if args.threshold is not None:
        spec = replace(spec, threshold=None if args.threshold < 0 else args.threshold)
    if args.pinv_init is not None:
        spec = replace(spec, pinv_init=args.pinv_init)
    return spec


def configure(model: torch.nn.Module, mode: str, arch: str, spec: PnPNystra) -> None:
    if mode == "exact":
        patch_attention(model, Exact())
    elif mode == "nystra":
        patch_attention(model, spec)
    elif mode in ("paper", "paper-exact"):
        window, paper_spec = PAPER[arch]
        drop = {"bias": "drop", "mask": "drop"} | ({"modulator": "drop"} if arch == "uformer" else {})
        patch_attention(model, paper_spec if mode == "paper" else Exact(), window=window, **drop)
    else:
        raise ValueError(f"unknown mode {mode!r}; use exact, nystra, paper-exact or paper")


Row = tuple[str, str, str, float, float, float, float, float]  # model, data, mode, psnr, ssim, psnr_y, ssim_y, s


def sr_cases(names: list[str], limit: int) -> Iterator[tuple[str, str, torch.Tensor, torch.Tensor]]:
    for ds in names:
        hrs = sorted((DATA / "images" / ds / "HR").glob("*.png"))[: limit or None]
        for hr_path in hrs:
            lr = read(DATA / "images" / ds / "LR_bicubic" / "X2" / f"{hr_path.stem}x2.png")
            hr = read(hr_path)[:, : lr.shape[1] * 2, : lr.shape[2] * 2]
            yield ds, hr_path.stem, lr, hr


def run_sr(model: torch.nn.Module | None, datasets: list[str], limit: int) -> tuple[list[float], float]:
    scores: list[list[float]] = []
    t0 = time.perf_counter()
    for _, _, lr, hr in sr_cases(datasets, limit):
        with torch.no_grad():
            out = imresize(lr.double(), 2.0).float() if model is None else restore_image(model, lr)
        scores.append(
            [psnr(out, hr, 2), ssim(out, hr, 2), psnr(out, hr, 2, y_channel=True), ssim(out, hr, 2, y_channel=True)]
        )
    return list(np.mean(scores, axis=0)), time.perf_counter() - t0


def run_dn(model: torch.nn.Module | None, ds: str, sigma: float, limit: int) -> tuple[list[float], float]:
    scores: list[list[float]] = []
    t0 = time.perf_counter()
    files = sorted(p for p in (DATA / "images" / ds).glob("*.png"))[: limit or None]
    for i, path in enumerate(files):
        clean = read(path)
        x = noisy(clean, sigma, seed=1000 * int(sigma) + i)
        with torch.no_grad():
            out = x if model is None else restore_image(model, x)
        scores.append([psnr(out, clean), ssim(out, clean), float("nan"), float("nan")])
    return list(np.mean(scores, axis=0)), time.perf_counter() - t0


def run_video(
    model: torch.nn.Module | None,
    seq: str,
    sigma: float,
    max_frames: int,
    crop: int,
    chunk: int | None = None,
    chunk_overlap: int = 0,
) -> tuple[list[float], float]:
    files = sorted((DATA / "video" / "Vid4" / seq).glob("*.png"))[: max_frames or None]
    clean = torch.stack([read(p) for p in files])
    if crop:
        h, w = clean.shape[-2:]
        top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        clean = clean[..., top : top + crop, left : left + crop]
    x = noisy(clean, sigma, seed=int(sigma))
    t0 = time.perf_counter()
    with torch.no_grad():
        out = x if model is None else restore_video(model, x, sigma=sigma, chunk=chunk, chunk_overlap=chunk_overlap)
    assert isinstance(out, torch.Tensor)
    scores = [[psnr(o, c), ssim(o, c), float("nan"), float("nan")] for o, c in zip(out, clean, strict=True)]
    return list(np.mean(scores, axis=0)), time.perf_counter() - t0


def main() -> int:
    prefer_huge_pages()  # as the front ends do; THP_MEM_ALLOC_ENABLE=0 in the environment measures without
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="swinir,uformer,rvrt")
    ap.add_argument("--modes", default="exact,nystra,paper-exact,paper")
    ap.add_argument("--limit", type=int, default=0, help="images per dataset (0 = all)")
    ap.add_argument("--sigmas", default="15,25,50", help="image denoising noise levels")
    ap.add_argument("--video-sigmas", default="10,20")
    ap.add_argument("--sr-datasets", default="Set5,Set14")
    ap.add_argument("--dn-datasets", default="CBSD68,Kodak24")
    ap.add_argument("--sequences", default="city,walk")
    ap.add_argument("--max-frames", type=int, default=0, help="first N frames of each Vid4 sequence (0 = all)")
    ap.add_argument("--crop", type=int, default=0, help="centre crop of the Vid4 frames (0 = full frames)")
    ap.add_argument("--landmarks", type=int, default=None, help="trained-window landmarks (default: the front ends')")
    ap.add_argument("--iters", type=int, default=None, help="trained-window iterations (default: the front ends')")
    ap.add_argument("--threshold", type=float, default=None, help="kernel threshold t (negative: plain exp)")
    ap.add_argument(
        "--pinv-init",
        choices=["matrix", "batch"],
        default=None,
        help="pseudo-inverse scaling at the trained window (matrix: the front ends' default; batch: the paper's)",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    ap.add_argument("--models-dir", type=Path, default=MODELS, help="folder holding the default .pth files")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    specs: dict[str, PnPNystra] = {}
    modes = args.modes.split(",")
    rows: list[Row] = []
    chunk_notes: list[str] = []

    def record(name: str, data: str, mode: str, fn: Callable[[], tuple[list[float], float]]) -> None:
        s, secs = fn()
        rows.append((name, data, mode, s[0], s[1], s[2], s[3], secs))
        print(f"{name:24s} {data:20s} {mode:8s} {s[0]:.2f} {s[1]:.4f} {s[2]:.2f} {s[3]:.4f} {secs:.1f}s", flush=True)

    for arch in args.models.split(","):
        path = args.models_dir / DEFAULTS[arch]
        spec = specs[arch] = trained_window_spec(arch, args)
        model = load_model(path)
        name = path.stem
        if arch == "swinir":
            sets = args.sr_datasets.split(",")
            for ds in sets:
                record("bicubic", f"{ds} x2", "-", partial(run_sr, None, [ds], args.limit))
                for mode in modes:
                    configure(model, mode, arch, spec)
                    record(name, f"{ds} x2", mode, partial(run_sr, model, [ds], args.limit))
        elif arch == "uformer":
            for ds in args.dn_datasets.split(","):
                for sigma in map(float, args.sigmas.split(",")):
                    label = f"{ds} s{sigma:g}"
                    record("noisy input", label, "-", partial(run_dn, None, ds, sigma, args.limit))
                    for mode in modes:
                        configure(model, mode, arch, spec)
                        record(name, label, mode, partial(run_dn, model, ds, sigma, args.limit))
        else:
            # the chunking the front ends use for this checkpoint (its zoo.json "defaults"), else the whole clip
            defaults = bundled_defaults(path)
            chunking = (
                (int(str(defaults["chunk"])), int(str(defaults.get("chunk_overlap", 2))))
                if "chunk" in defaults
                else (None, 0)
            )
            chunk_notes.append(f"{name}: chunk {chunking[0] or 'whole clip'}, overlap {chunking[1] or 0}")
            for seq in args.sequences.split(","):
                for sigma in map(float, args.video_sigmas.split(",")):
                    label = f"Vid4-{seq} s{sigma:g}"
                    record(
                        "noisy input",
                        label,
                        "-",
                        partial(run_video, None, seq, sigma, args.max_frames, args.crop),
                    )
                    for mode in modes:
                        configure(model, mode, arch, spec)
                        record(
                            name,
                            label,
                            mode,
                            partial(run_video, model, seq, sigma, args.max_frames, args.crop, *chunking),
                        )

    nystra = "; ".join(f"{k}: {v}" for k, v in specs.items())
    paper = ", ".join(f"{k}: window {v[0]}, {v[1]}" for k, v in PAPER.items())
    lines = [
        f"Settings: limit={args.limit or 'all'} images/dataset, Vid4 max_frames={args.max_frames or 'all'} "
        f"crop={args.crop or 'none'}; nystra = at the trained window, {nystra}; paper = {paper}, bias/mask/modulator "
        "dropped; paper-exact = the same with Exact(); "
        + (f"video chunking as the front ends use it: {'; '.join(chunk_notes)}; " if chunk_notes else "")
        + f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU, fp32.",
        "",
        "| model | data | attention | PSNR RGB | SSIM RGB | PSNR Y | SSIM Y | time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        y = f"{r[5]:.2f} | {r[6]:.4f}" if not np.isnan(r[5]) else "- | -"
        lines.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.2f} | {r[4]:.4f} | {y} | {r[7]:.1f} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
