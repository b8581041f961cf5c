"""Why SpyNet does not learn here: check the flow pairs' ground truth, then train the finest level alone.

    .venv/bin/python benchmarks/spynet_probe.py check                  # GT flow vs a brute-force shift search
    .venv/bin/python benchmarks/spynet_probe.py train --steps 600      # finest level only, full motion range
    .venv/bin/python benchmarks/spynet_probe.py train --steps 150 --small --lr 3e-4   # sub-pixel motion only

Pairs: vsnystra.training.flow_data.FlowPairs on ../shared/data/train/stills (64 px, as RVRT's denoisers feed SpyNet).
``check`` renders pure pans without noise and finds, per pair, the constant shift (1/8 px grid, +-6 px) whose warp
matches best. ``train`` zeroes the five coarser levels' heads (they output zero flow), trains the finest level on a
fixed pool of batches (flips alternate) and reports the validation EPE next to zero flow's and the mean |flow|.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from vsnystra.archs.spynet import flow_warp
from vsnystra.training.data import collect_images
from vsnystra.training.flow import _epe, load_spynet
from vsnystra.training.flow_data import FlowPairs, FlowScene

STILLS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "train" / "stills"
INNER = (slice(None), slice(None), slice(8, -8), slice(8, -8))


def _err(supp: torch.Tensor, ref: torch.Tensor, flow: torch.Tensor) -> float:
    return float((flow_warp(supp, flow.permute(0, 2, 3, 1), padding_mode="border") - ref).abs()[INNER].mean())


def check(files: list[Path]) -> None:
    scene = FlowScene(shift=3.0, zoom=0.0, rotate=0.0, objects=0, static=0.0, sigma_max=0.0)
    ref, supp, flow = FlowPairs(files, size=64, scene=scene).sample(6, torch.Generator().manual_seed(1))
    print("| pair | GT shift (dx, dy) | best shift found | error at best | error at GT | error at zero |")
    print("|---|---|---|---|---|---|")
    steps = torch.arange(-6.0, 6.001, 0.125)
    for i in range(len(ref)):
        r, s = ref[i : i + 1], supp[i : i + 1]
        best = min(
            (_err(s, r, torch.tensor([dx, dy]).view(1, 2, 1, 1).expand(1, 2, 64, 64)), float(dx), float(dy))
            for dx in steps
            for dy in steps
        )
        gt = flow[i, :, 32, 32].tolist()
        print(
            f"| {i} | ({gt[0]:.3f}, {gt[1]:.3f}) | ({best[1]:.3f}, {best[2]:.3f}) | {best[0]:.4f} | "
            f"{_err(s, r, flow[i : i + 1]):.4f} | {_err(s, r, torch.zeros_like(flow[i : i + 1])):.4f} |"
        )


def train(files: list[Path], steps: int, lr: float, small: bool, pool: int) -> None:
    scene = (
        FlowScene(shift=1.0, zoom=0.01, rotate=0.5, objects=2, object_shift=1.0, sigma_max=20 / 255) if small else None
    )
    pairs = FlowPairs(files, size=64, scene=scene)
    gen = torch.Generator().manual_seed(0)
    batches = [pairs.sample(8, gen) for _ in range(pool)]
    val = pairs.sample(32, torch.Generator().manual_seed(12345))
    torch.manual_seed(0)
    net = load_spynet(None)
    for level in list(net.basic_module)[:5]:
        for p in level.parameters():
            p.requires_grad_(False)
        head = level.basic_module[-1]
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr)
    flip = torch.tensor([-1.0, 1.0]).view(1, 2, 1, 1)
    print("| step | val EPE | zero-flow EPE | mean abs predicted flow | s/step |")
    print("|---|---|---|---|---|")
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        ref, supp, flow = batches[step % pool]
        if step % 2:
            ref, supp, flow = ref.flip(-1), supp.flip(-1), flow.flip(-1) * flip
        loss = torch.linalg.vector_norm(net.level_flows(ref, supp)[-1] - flow, dim=1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps:
            with torch.no_grad():
                pred = net.level_flows(val[0], val[1])[-1]
            rate = (time.perf_counter() - t0) / step
            zero = _epe(torch.zeros_like(val[2]), val[2])
            print(f"| {step} | {_epe(pred, val[2]):.3f} | {zero:.3f} | {float(pred.abs().mean()):.4f} | {rate:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("check", "train"))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--small", action="store_true", help="sub-pixel motion only (pans and objects <= 1 px)")
    ap.add_argument("--pool", type=int, default=64, help="fixed batches to cycle through")
    args = ap.parse_args()
    torch.set_num_threads(1)
    files = collect_images([STILLS])
    if args.what == "check":
        check(files)
    else:
        train(files, args.steps, args.lr, args.small, args.pool)


if __name__ == "__main__":
    main()
