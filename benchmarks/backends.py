"""Back-ends side by side on this CPU: vsnystra eager (torch), torch.compile, ONNX Runtime and OpenVINO.

One process, one thread, same weights and input; every case is exported once (torch.export -> ONNX, fixed shape)
and compiled by OpenVINO and ONNX Runtime; the back-ends then run alternately, median of ``--reps`` after one
warm-up each. Setup times (export, compile, session load, torch.compile's first call) are printed separately.
Models run with the attention the filters use by default ("auto": exact at the trained window on CPUs). Full-size
models have random weights (timing does not depend on them).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/backends.py --quick --write-table   # bundled models -> table
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/backends.py --compile --bf16         # + full-size rows

``--write-table`` stores the fp32 torch/OpenVINO medians of the bundled models in vsnystra/runtime/backends.json,
the table backend="auto" reads (per architecture and attention setting, device class "cpu").
"""

from __future__ import annotations

import argparse
import json
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

from export import bundled, swinir_m, uformer_b  # noqa: E402  (the sibling script's model builders)

from vsnystra.archs.base import RestorationModel  # noqa: E402
from vsnystra.archs.patch import patch_attention  # noqa: E402
from vsnystra.runtime.export import example_input, for_export, write_onnx  # noqa: E402
from vsnystra.runtime.settings import attention_spec  # noqa: E402

TABLE = ROOT / "vsnystra" / "runtime" / "backends.json"


# (label, builder, (H, W), frames, sigma, bundled)
CASES: list[tuple[str, Callable[[], RestorationModel], tuple[int, int], int | None, float | None, bool]] = [
    ("swinir-x2-small", bundled("swinir-x2-small"), (128, 128), None, None, True),
    ("uformer-denoise-small", bundled("uformer-denoise-small"), (256, 256), None, None, True),
    ("rvrt-denoise-small", bundled("rvrt-denoise-small"), (136, 136), 4, 20.0, True),
    ("SwinIR-M x2 (random weights)", swinir_m, (128, 128), None, None, False),
    ("Uformer-B (random weights)", uformer_b, (256, 256), None, None, False),
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


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def bench(case: tuple, args: argparse.Namespace, tmp: Path, table: dict[str, dict[str, object]]) -> list[str]:  # type: ignore[type-arg]
    import onnxruntime as ort
    import openvino as ov

    label, build, size, frames, sigma, is_bundled = case
    model = build()
    patch_attention(model, attention_spec("auto", None, None, model.info.arch))
    net = for_export(model, sigma).eval()
    x = example_input(net, size, frames=frames)
    path = tmp / "model.onnx"
    _, t_export = timed(lambda: write_onnx(net, x, path))
    rows = []
    for dtype in ("fp32", "bf16") if args.bf16 else ("fp32",):
        hint = "f32" if dtype == "fp32" else "bf16"
        config = {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": hint}
        compiled, t_ov = timed(lambda: ov.Core().compile_model(str(path), "CPU", config))  # noqa: B023
        xn = x.numpy()
        runs: dict[str, Callable[[], object]] = {}
        tnet, tx = (net, x) if dtype == "fp32" else (net.to(torch.bfloat16), x.to(torch.bfloat16))

        def eager(tnet: torch.nn.Module = tnet, tx: torch.Tensor = tx) -> object:
            with torch.no_grad():
                return tnet(tx)

        runs["torch"] = eager
        runs["openvino"] = lambda compiled=compiled, xn=xn: compiled(xn)
        setup = {"export": t_export, "openvino": t_ov}
        if dtype == "fp32":
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = opts.inter_op_num_threads = 1
            session, setup["onnxruntime"] = timed(
                lambda: ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])  # noqa: B023
            )
            feed = {session.get_inputs()[0].name: xn}
            runs["onnxruntime"] = lambda session=session, feed=feed: session.run(None, feed)
        if args.compile:
            fast = torch.compile(tnet)

            def compiled_torch(fast: Callable[..., object] = fast, tx: torch.Tensor = tx) -> object:
                with torch.no_grad():
                    return fast(tx)

            _, setup["torch.compile"] = timed(compiled_torch)
            runs["torch.compile"] = compiled_torch
        with torch.no_grad():
            ref = tnet(tx).float().numpy()
        diff = float(np.abs(np.asarray(compiled(xn)[0], dtype=np.float32) - ref).max())
        med = median_times(runs, args.reps)
        best = min(med, key=lambda k: med[k])
        ratios = " | ".join(f"{k} {v * 1e3:.0f} ms ({med['torch'] / v:.2f}x)" for k, v in med.items())
        setups = ", ".join(f"{k} {v:.1f} s" for k, v in setup.items())
        shape = "x".join(map(str, x.shape))
        rows.append(f"| {label} | {dtype} | {shape} | {ratios} | best: {best} | OV diff {diff:.1e} | {setups} |")
        if is_bundled and dtype == "fp32":
            row = {"torch_ms": round(med["torch"] * 1e3, 1), "openvino_ms": round(med["openvino"] * 1e3, 1)}
            row["input"] = shape
            table[f"{model.info.arch}/auto"] = table[f"{model.info.arch}/exact"] = row
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="bundled models only")
    p.add_argument("--only", default="", help="comma-separated label prefixes to run")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also torch.compile (minutes of compiling per model)")
    p.add_argument("--bf16", action="store_true", help="also bf16 (torch eager bf16, OpenVINO bf16 hint)")
    p.add_argument("--write-table", action="store_true", help="store the bundled fp32 rows for backend='auto'")
    args = p.parse_args()
    torch.set_num_threads(1)
    import onnxruntime as ort
    import openvino as ov

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"# torch {torch.__version__}, openvino {ov.__version__}, onnxruntime {ort.__version__}; 1 thread")
    print(f"# median of {args.reps} after a warm-up, back-ends alternating; (Nx) = torch eager time / back-end time")
    cases = [c for c in CASES if c[5]] if args.quick else CASES
    if args.only:
        cases = [c for c in cases if any(c[0].startswith(o) for o in args.only.split(","))]
    table: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            bench(case, args, Path(tmp), table)
    if args.write_table:
        old = json.loads(TABLE.read_text()) if TABLE.is_file() else {"devices": {}}
        old["devices"].setdefault("cpu", {}).update(table)
        old["command"] = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/backends.py " + " ".join(sys.argv[1:])
        TABLE.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
        print(f"# wrote {TABLE.relative_to(ROOT)}")
    print(f"# load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
