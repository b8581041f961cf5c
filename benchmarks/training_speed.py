"""Which CPU speed-ups pay for training the bundled models: one optimizer step, variants side by side in one process.

Variants (one torch thread each unless --threads says otherwise):

* ``fp32``: eager float32, what ``python -m vsnystra.training`` runs (the baseline of every ratio);
* ``channels_last``: model and 4-D inputs in channels-last memory format;
* ``bf16``: ``torch.autocast("cpu", dtype=torch.bfloat16)`` around forward and loss (the CPU's AVX512-BF16 is used
  by oneDNN where it exists);
* ``compile``: ``torch.compile`` (inductor) of the model; its first calls (compilation) are timed apart.

Each variant gets its own copy of the same seeded model and Adam optimizer, and the same seeded batch at the
preset's patch, batch and clip length. Steps alternate between variants (so a change in the machine's load hits
all of them); the median of ``--steps`` timed steps after ``--warmup`` untimed ones is reported, as seconds and as
the baseline's time divided by the variant's (above 1 = faster). A variant that fails is reported with its error.

    .venv/bin/python benchmarks/training_speed.py --presets rvrt-denoise-small,uformer-denoise-small --steps 3
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from vsnystra.archs.rvrt_gda import differentiable_gda
from vsnystra.training.loop import build_model, charbonnier, zero_flows
from vsnystra.training.presets import Preset, get_preset


def _batch(p: Preset) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    if p.task == "sr":
        lr = torch.rand(p.batch, 3, p.patch, p.patch, generator=g)
        return lr, torch.rand(p.batch, 3, p.patch * p.scale, p.patch * p.scale, generator=g)
    if p.task == "video_denoise":
        clean = torch.rand(p.batch, p.frames, 3, p.patch, p.patch, generator=g)
        sigma = torch.full((p.batch, p.frames, 1, p.patch, p.patch), 0.1)
        return torch.cat([clean + 0.1 * torch.randn(clean.shape, generator=g), sigma], dim=2), clean
    clean = torch.rand(p.batch, 3, p.patch, p.patch, generator=g)
    return clean + 0.1 * torch.randn(clean.shape, generator=g), clean


class Variant:
    def __init__(self, name: str, preset: Preset, base: nn.Module) -> None:
        self.name, self.preset = name, preset
        self.model: Any = copy.deepcopy(base).train()
        self.x, self.y = _batch(preset)
        if name == "channels_last":  # 4-D weights only: RVRT also holds Conv3d (5-D) weights
            for module in self.model.modules():
                if isinstance(module, nn.Conv2d):
                    module.to(memory_format=torch.channels_last)
            if self.x.ndim == 4:
                self.x = self.x.contiguous(memory_format=torch.channels_last)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(params, lr=1e-5)
        self.forward: Callable[[torch.Tensor], torch.Tensor] = self.model
        if name == "compile":
            self.forward = torch.compile(self.model)
        self.times: list[float] = []
        self.setup = 0.0
        self.error = ""

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            if self.preset.arch == "rvrt":
                stack.enter_context(differentiable_gda())
                stack.enter_context(zero_flows(self.model, self.preset.zero_flow))
            if self.name == "bf16":
                stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
            yield

    def step(self) -> float:
        t = time.perf_counter()
        with self._context():
            loss = charbonnier(self.forward(self.x).float(), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - t


def run(preset_name: str, names: list[str], warmup: int, steps: int) -> list[Variant]:
    preset = get_preset(preset_name)
    base = build_model(preset, seed=0)
    for prefix in preset.freeze:
        for n, p in base.named_parameters():
            if n.startswith(prefix):
                p.requires_grad_(False)
    variants = [Variant(n, preset, base) for n in names]
    for v in variants:  # warm-up; the compile variant's first call compiles
        try:
            v.setup = sum(v.step() for _ in range(warmup))
        except Exception as exc:  # report the failure, keep the other variants
            v.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    for _ in range(steps):
        for v in variants:
            if not v.error:
                v.times.append(v.step())
    return variants


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="rvrt-denoise-small,uformer-denoise-small,swinir-x2-small")
    ap.add_argument("--variants", default="fp32,channels_last,bf16,compile")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = args.variants.split(",")
    if names[0] != "fp32":
        names = ["fp32", *[n for n in names if n != "fp32"]]
    print(f"torch {torch.__version__}, {args.threads} thread(s), load average before: {os.getloadavg()[0]:.1f}")
    print()
    print("| preset | variant | s/step (median) | fp32 / variant | warm-up s (incl. compile) |")
    print("|---|---|---|---|---|")
    for preset in args.presets.split(","):
        variants = run(preset, names, args.warmup, args.steps)
        base = statistics.median(variants[0].times) if variants[0].times else float("nan")
        for v in variants:
            if v.error:
                print(f"| {preset} | {v.name} | failed: {v.error} | - | - |")
                continue
            med = statistics.median(v.times)
            print(f"| {preset} | {v.name} | {med:.2f} | {base / med:.2f}x | {v.setup:.1f} |")
    print()
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
