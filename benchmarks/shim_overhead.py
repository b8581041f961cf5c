"""Per-call overhead of the native shim + bridge (core.nystra.<Name>) against calling the same Python function
directly (baseline), both side by side in one run. The shim is only on the filter-creation path: frames never pass
through it, so this is the whole cost it adds.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/shim_overhead.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from typing import Any

import vapoursynth as vs
from vapoursynth import core


def impl(clip: vs.VideoNode, **kwargs: Any) -> vs.VideoNode:
    return clip.std.Invert()


def timed(fn: Any, calls: int) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    module = types.ModuleType("vsnystra.vs.filters")
    module.SwinIR = impl  # type: ignore[attr-defined]
    sys.modules["vsnystra.vs.filters"] = module  # stand-in: measure the shim, not model loading
    clip = core.std.BlankClip(format=vs.RGBS, width=64, height=48, length=10)
    core.nystra.SwinIR(clip)  # warm-up: first import of the bridge
    direct = timed(lambda: impl(clip=clip, tile=[64, 64]), args.calls)
    shim = timed(lambda: core.nystra.SwinIR(clip, tile=[64, 64]), args.calls)
    print("| path | µs per filter call | ratio to direct |")
    print("|---|---|---|")
    print(f"| direct Python call of the implementation (baseline) | {direct * 1e6:.1f} | 1.00 |")
    print(f"| core.nystra.SwinIR via shim + bridge | {shim * 1e6:.1f} | {shim / direct:.2f} |")


if __name__ == "__main__":
    main()
