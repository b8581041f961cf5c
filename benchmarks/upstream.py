"""The real stock model vs ours: upstream SwinIR-M x2 and Uformer-B source files against vsnystra, same weights.

    .venv/bin/python benchmarks/upstream.py --swinir-src /path/to/SwinIR/models/network_swinir.py \
        --uformer-src /path/to/Uformer/model.py [--size 256] [--reps 2]

benchmarks/models.py emulates the stock model (setting a) inside our implementation; this script runs the
upstream modules themselves. Their source is not part of vsnystra (licences; no copy in this repository): pass the
files of a local checkout (they need timm and einops installed). Both models get the same random weights (the
official key layout is shared, so one state dict loads into both), the same 'baby' crop, and run interleaved;
the table gives CPU ms (min over --reps), the speed-up of ours (Exact attention at the trained window, the default
of the filters) over upstream, and the max |difference| of the outputs. Results are appended to
benchmarks/results/upstream.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
from pathlib import Path
from types import ModuleType

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from models import baby, build  # noqa: E402
from vsnystra.runtime.memory import prefer_huge_pages  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "upstream.md"

UPSTREAM_ARGS = {
    "swinir": (
        "SwinIR",
        {
            "upscale": 2,
            "in_chans": 3,
            "img_size": 64,
            "window_size": 8,
            "img_range": 1.0,
            "depths": [6] * 6,
            "embed_dim": 180,
            "num_heads": [6] * 6,
            "mlp_ratio": 2,
            "upsampler": "pixelshuffle",
            "resi_connection": "1conv",
        },
    ),
    "uformer": (
        "Uformer",
        {
            "img_size": 128,
            "embed_dim": 32,
            "win_size": 8,
            "token_projection": "linear",
            "token_mlp": "leff",
            "depths": [1, 2, 8, 8, 2, 8, 8, 2, 1],
            "modulator": True,
            "dd_in": 3,
        },
    ),
}


def load_source(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"upstream.py: cannot import {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cpu_ms(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    with torch.no_grad():
        c0 = time.process_time()
        out = model(x)
        return (time.process_time() - c0) * 1000, out


def run(arch: str, src: Path, size: int, reps: int) -> str:
    cls_name, kwargs = UPSTREAM_ARGS[arch]
    upstream = getattr(load_source(src, f"upstream_{arch}"), cls_name)(**kwargs).eval()
    ours = build(arch)
    upstream.load_state_dict(ours.state_dict(), strict=False)  # upstream may lack our non-persistent extras
    missing = set(upstream.state_dict()) - set(ours.state_dict())
    if missing:
        raise SystemExit(f"upstream.py: upstream {arch} has keys ours lacks: {sorted(missing)[:5]}")
    x = baby(size)
    with torch.no_grad():  # warm-up on a small crop (caches, allocator)
        side = 128 if arch == "uformer" else 64
        ours(x[..., :side, :side])
        upstream(x[..., :side, :side])
    t_up: list[float] = []
    t_ours: list[float] = []
    diff = 0.0
    for rep in range(reps):
        a, out_up = cpu_ms(upstream, x)
        b, out_ours = cpu_ms(ours, x)
        t_up.append(a)
        t_ours.append(b)
        diff = max(diff, float((out_up - out_ours).abs().max()))
        print(f"  ({arch} rep {rep}: upstream {a:.0f} ms, ours {b:.0f} ms CPU)", file=sys.stderr, flush=True)
    a, b = min(t_up), min(t_ours)
    return f"| {arch} | {size}² | {a:.0f} | {b:.0f} | **{a / b:.2f}x** | {diff:.2e} |"


def main() -> None:
    prefer_huge_pages()  # as the front ends do; THP_MEM_ALLOC_ENABLE=0 in the environment measures without
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--swinir-src", type=Path, help="upstream models/network_swinir.py")
    ap.add_argument("--uformer-src", type=Path, help="upstream model.py of Uformer")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if not args.swinir_src and not args.uformer_src:
        ap.error("pass --swinir-src and/or --uformer-src (files of a local upstream checkout)")
    lines = [
        "",
        f"### {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `benchmarks/upstream.py --size {args.size} "
        f"--reps {args.reps}`",
        "",
        f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
        f"thread(s) (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), "
        f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}, fp32, random weights shared by "
        "both, Set5 'baby' centre crop, min of the interleaved reps. Baseline: the upstream module (stock).",
        "",
        "| model | input | upstream CPU ms | vsnystra Exact CPU ms | speed-up vs upstream | max abs diff |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for arch, src in (("swinir", args.swinir_src), ("uformer", args.uformer_src)):
        if src:
            lines.append(run(arch, src, args.size, args.reps))
            print(lines[-1], flush=True)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
