"""Eager vsnystra (torch) vs OpenVINO vs ONNX Runtime on this CPU: same weights, 1 thread, one process.

Every case is exported once (torch.export -> ONNX, exact attention, fixed input shape) and compiled by OpenVINO and
ONNX Runtime; then the three run alternately (median of ``--reps`` after one warm-up each). Ratios are eager time
over back-end time (> 1: the back-end is faster than eager vsnystra). Export and compile times are printed
separately. The full-size models have random weights (timing does not depend on them).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/export.py            # bundled models and SwinIR-M x2, Uformer-B
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/export.py --quick    # bundled models only
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vsnystra.archs.base import RestorationModel  # noqa: E402
from vsnystra.archs.patch import patch_attention  # noqa: E402
from vsnystra.archs.registry import load_model  # noqa: E402
from vsnystra.archs.swinir import SwinIR  # noqa: E402
from vsnystra.archs.uformer import Uformer  # noqa: E402
from vsnystra.attention.specs import Exact  # noqa: E402
from vsnystra.runtime.export import write_onnx  # noqa: E402
from vsnystra.zoo import resolve_model  # noqa: E402


def bundled(name: str) -> Callable[[], RestorationModel]:
    return lambda: load_model(str(resolve_model(name)))


def swinir_m() -> RestorationModel:
    torch.manual_seed(0)
    net = SwinIR(
        img_size=64, embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6, window_size=8, upscale=2,
        upsampler="pixelshuffle",
    )  # fmt: skip
    return load_model(net.state_dict())


def uformer_b() -> RestorationModel:
    torch.manual_seed(0)
    return load_model(Uformer(embed_dim=32, win_size=8).state_dict())


CASES: list[tuple[str, Callable[[], RestorationModel], int]] = [
    ("swinir-x2-small", bundled("swinir-x2-small"), 128),
    ("uformer-denoise-small", bundled("uformer-denoise-small"), 256),
    ("SwinIR-M x2 (random weights)", swinir_m, 128),
    ("Uformer-B (random weights)", uformer_b, 256),
]


def median_times(runs: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    for fn in runs.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(reps):
        for k, fn in runs.items():  # alternating, so drifts in machine load hit every back-end alike
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def bench(name: str, build: Callable[[], RestorationModel], side: int, reps: int, tmp: Path) -> str:
    import onnxruntime as ort
    import openvino as ov

    model = build()
    patch_attention(model, Exact())
    x = torch.rand(1, model.info.in_channels, side, side, generator=torch.Generator().manual_seed(0))
    path = tmp / "model.onnx"
    t = time.perf_counter()
    write_onnx(model, x, path)
    t_export = time.perf_counter() - t
    t = time.perf_counter()
    compiled = ov.Core().compile_model(
        ov.Core().read_model(str(path)), "CPU", {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32"}
    )
    t_ov = time.perf_counter() - t
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    t = time.perf_counter()
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    t_ort = time.perf_counter() - t
    xn = x.numpy()
    feed = {session.get_inputs()[0].name: xn}
    with torch.no_grad():
        ref = model(x).numpy()
    d_ov = float(np.abs(compiled(xn)[0] - ref).max())
    d_ort = float(np.abs(session.run(None, feed)[0] - ref).max())

    def eager() -> object:
        with torch.no_grad():
            return model(x)

    med = median_times(
        {"eager": eager, "openvino": lambda: compiled(xn), "onnxruntime": lambda: session.run(None, feed)}, reps
    )
    e = med["eager"]
    return (
        f"| {name} | {side}² | {e * 1e3:.0f} | {med['openvino'] * 1e3:.0f} | {e / med['openvino']:.2f}× "
        f"| {med['onnxruntime'] * 1e3:.0f} | {e / med['onnxruntime']:.2f}× | {d_ov:.1e} / {d_ort:.1e} "
        f"| {t_export:.0f} / {t_ov:.1f} / {t_ort:.1f} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="bundled models only")
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    import onnxruntime as ort
    import openvino as ov

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, 1 thread, fp32")
    print(f"# torch {torch.__version__}, openvino {ov.__version__}, onnxruntime {ort.__version__}")
    print(f"# median of {args.reps} after a warm-up, back-ends alternating; ratio = eager time / back-end time")
    print()
    print("| model | input | eager ms | OpenVINO ms | vs eager | ORT ms | vs eager | max diff OV / ORT "
          "| export s / OV compile s / ORT load s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    cases = CASES[:2] if args.quick else CASES
    with tempfile.TemporaryDirectory() as tmp:
        for name, build, side in cases:
            print(bench(name, build, side, args.reps, Path(tmp)), flush=True)


if __name__ == "__main__":
    main()
