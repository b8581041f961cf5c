"""Back-ends side by side on this CPU: vsnystra eager (torch), torch.compile, ONNX Runtime and OpenVINO.

One process, one thread, same weights and input; the back-ends run alternately, median of ``--reps`` after one
warm-up each. torch and OpenVINO run through the runtime that the filters use (``restore_image``; RVRT one temporal
chunk through ``restore_chunk``, the zoo entry's chunk length, the sigma map as an input) with the OpenVINO wrapper
backend="openvino" builds (:class:`vsnystra.runtime.openvino.OpenVINOModel`); ONNX Runtime and torch.compile run the
model on the same (padded) input. Each case is exported once (torch.export -> ONNX without onnxscript's rewriter,
as the wrapper converts) and that file feeds both OpenVINO and ONNX Runtime. Setup times (export, OpenVINO's
convert + compile, ORT session, torch.compile's first call) are printed separately. Models run with the attention
the filters use by default ("auto": exact at the trained window on CPUs). Full-size models have random weights.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/backends.py --quick --write-table   # bundled models -> table
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/backends.py --only SwinIR-M,Uformer-B  # full-size rows
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/backends.py --quick --only swinir,uformer --compile

``--write-table`` stores the fp32 torch/OpenVINO medians of the bundled models in vsnystra/runtime/backends.json,
the table backend="auto" reads, under this CPU's device class (``vsnystra.runtime.backends.device_class``).
``--bf16`` adds bf16 rows (torch: the model loaded in bf16 through the model cache, as ``half=True`` runs it;
OpenVINO's bf16 hint) and is refused on CPUs without native bf16 (AVX512-BF16/AMX), where both would be emulated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from export import swinir_m, uformer_b  # noqa: E402  (the sibling script's model builders)

from vsnystra.archs.base import AttentionConfig, RestorationModel  # noqa: E402
from vsnystra.archs.patch import patch_attention  # noqa: E402
from vsnystra.archs.registry import detect_file  # noqa: E402
from vsnystra.runtime.backends import device_class  # noqa: E402
from vsnystra.runtime.cache import ModelCache  # noqa: E402
from vsnystra.runtime.device import cpu_has_native_bf16  # noqa: E402
from vsnystra.runtime.export import write_onnx  # noqa: E402
from vsnystra.runtime.image import restore_image  # noqa: E402
from vsnystra.runtime.openvino import OpenVINOModel  # noqa: E402
from vsnystra.runtime.settings import attention_spec  # noqa: E402
from vsnystra.runtime.video import restore_chunk  # noqa: E402
from vsnystra.zoo import bundled_defaults, resolve_model  # noqa: E402

TABLE = ROOT / "vsnystra" / "runtime" / "backends.json"
SIGMA = 20.0  # RVRT's noise level (an input of the graph: any value times the same)


@dataclass(frozen=True)
class Case:
    label: str
    build: Callable[[torch.dtype], RestorationModel]
    size: tuple[int, int]  # (H, W) of the image or frames
    bundled: bool  # a row of the table backend="auto" reads (--write-table)
    zoo: str | None = None  # the bundled model's name (its zoo defaults: RVRT's chunk length)


def bundled(name: str) -> Callable[[torch.dtype], RestorationModel]:
    """The bundled model through the model cache (bf16 as ``half=True`` loads it), attention "auto"."""

    def build(dtype: torch.dtype) -> RestorationModel:
        path = resolve_model(name)
        spec = attention_spec("auto", None, None, detect_file(path))
        model = ModelCache().get(path, device=torch.device("cpu"), dtype=dtype, attention=AttentionConfig(spec=spec))
        assert isinstance(model, RestorationModel)
        return model

    return build


def random_weights(builder: Callable[[], RestorationModel]) -> Callable[[torch.dtype], RestorationModel]:
    def build(dtype: torch.dtype) -> RestorationModel:
        model = builder()
        patch_attention(model, attention_spec("auto", None, None, model.info.arch))
        return model.to(dtype).eval()

    return build


CASES = [
    Case("swinir-x2-small", bundled("swinir-x2-small"), (128, 128), True, "swinir-x2-small"),
    Case("uformer-denoise-small", bundled("uformer-denoise-small"), (256, 256), True, "uformer-denoise-small"),
    Case("rvrt-denoise-small", bundled("rvrt-denoise-small"), (136, 136), True, "rvrt-denoise-small"),
    # larger RVRT frames: where backend="auto" stops using OpenVINO for video (openvino.AUTO_MAX_VIDEO_AREA)
    Case("rvrt-denoise-small@256", bundled("rvrt-denoise-small"), (256, 256), False, "rvrt-denoise-small"),
    Case("rvrt-denoise-small@480", bundled("rvrt-denoise-small"), (480, 480), False, "rvrt-denoise-small"),
    Case("SwinIR-M x2 (random weights)", random_weights(swinir_m), (128, 128), False),
    Case("Uformer-B (random weights)", random_weights(uformer_b), (256, 256), False),
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


def timed[T](fn: Callable[[], T]) -> tuple[T, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def chunk_frames(model: RestorationModel, zoo: str | None) -> int | None:
    """RVRT's temporal chunk: the zoo entry's (e.g. 6 for rvrt-denoise-small), else the runtime default."""
    from vsnystra.runtime.video import DEFAULT_CHUNK

    if model.info.kind != "video":
        return None
    chunk = DEFAULT_CHUNK if zoo is None else bundled_defaults(resolve_model(zoo)).get("chunk", DEFAULT_CHUNK)
    assert isinstance(chunk, int)
    return chunk


def bench(case: Case, dtype: torch.dtype, args: argparse.Namespace, tmp: Path) -> tuple[str, str, dict[str, Any]]:
    """(architecture, table row, torch/OpenVINO medians): medians per back-end, setup times, OpenVINO's max
    difference from torch on the same input."""
    import onnxruntime as ort

    model = case.build(dtype)
    video = model.info.kind == "video"
    frames = chunk_frames(model, case.zoo)
    gen = torch.Generator().manual_seed(0)
    h, w = case.size
    if video:
        clip = torch.rand(frames or 0, 3, h, w, generator=gen).to(dtype)
    else:
        image = torch.rand(model.info.in_channels, h, w, generator=gen).to(dtype)

    def run(net: torch.nn.Module) -> Callable[[], torch.Tensor]:
        def call() -> torch.Tensor:
            with torch.no_grad():
                if video:
                    return restore_chunk(net, clip, sigma=SIGMA)
                return restore_image(net, image)

        return call

    seen: list[torch.Tensor] = []  # the model's input as the runtime pads it (and appends the sigma map)
    hook = model.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    ref = run(model)()
    hook.remove()
    x = seen[0]
    path = tmp / f"{case.label.split()[0]}-{frames}.onnx"
    setup: dict[str, float] = {}
    if not path.is_file():  # fp32 runs first: bf16 reuses its graph with OpenVINO's bf16 hint
        _, setup["export"] = timed(lambda: write_onnx(model, x, path, optimize=False))
    wrapper = OpenVINOModel(model, disk_cache=tmp / "ov", frames=frames)
    wrapper.add_onnx(path, x)
    runs: dict[str, Callable[[], object]] = {"torch": run(model), "openvino": run(wrapper)}
    got, setup["OV convert+compile"] = timed(run(wrapper))
    assert (wrapper.exports, wrapper.compiles) == (0, 1)
    diff = float((got.float() - ref.float()).abs().max())
    if dtype == torch.float32:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        session, setup["ORT session"] = timed(
            lambda: ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        )
        feed = {session.get_inputs()[0].name: x.numpy()}
        runs["onnxruntime"] = lambda: session.run(None, feed)
    if args.compile and not video:
        fast = torch.compile(model)

        def compiled() -> object:
            with torch.no_grad():
                return fast(x)

        _, setup["torch.compile first call"] = timed(compiled)
        runs["torch.compile"] = compiled
    med = median_times(runs, args.reps)
    best = min(med, key=lambda k: med[k])
    ratios = " | ".join(f"{k} {v * 1e3:.0f} ms ({med['torch'] / v:.2f}x)" for k, v in med.items())
    setups = ", ".join(f"{k} {v:.1f} s" for k, v in setup.items())
    setups += f"; peak RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB"
    shape = "x".join(map(str, x.shape))
    name = "fp32" if dtype == torch.float32 else "bf16"
    row = f"| {case.label} | {name} | {shape} | {ratios} | best: {best} | OV diff {diff:.1e} | {setups} |"
    measured: dict[str, Any] = {
        "torch_ms": round(med["torch"] * 1e3, 1),
        "openvino_ms": round(med["openvino"] * 1e3, 1),
    }
    measured["input"] = shape
    return model.info.arch, row, measured


def machine() -> str:
    """The CPU model name (Linux), its core count and the vector ISA PyTorch uses."""
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        fields = dict(
            (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in cpuinfo.read_text().splitlines())
        )
        name = f"{fields.get('model name', name)} (family {fields.get('cpu family')} model {fields.get('model')})"
    return f"{name}, {os.cpu_count()} CPUs, {torch.backends.cpu.get_cpu_capability()}"


def write_table(rows: dict[str, dict[str, Any]]) -> None:
    data = json.loads(TABLE.read_text()) if TABLE.is_file() else {"devices": {}, "machines": {}}
    device = device_class()
    data["devices"].setdefault(device, {}).update(rows)
    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/backends.py " + " ".join(sys.argv[1:])
    data.setdefault("machines", {})[device] = {"machine": machine(), "command": command}
    TABLE.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"# wrote {TABLE.relative_to(ROOT)} ({device})")


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="bundled models only")
    p.add_argument("--only", default="", help="comma-separated label prefixes to run")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also torch.compile (image models; minutes per model)")
    p.add_argument("--bf16", action="store_true", help="also bf16 (CPUs with native bf16 only)")
    p.add_argument("--write-table", action="store_true", help="store the bundled fp32 rows for backend='auto'")
    args = p.parse_args()
    if args.bf16 and not cpu_has_native_bf16():
        p.error("--bf16: this CPU has no native bf16 (AVX512-BF16/AMX); torch and OpenVINO would both emulate it")
    torch.set_num_threads(1)
    import onnxruntime as ort
    import openvino as ov

    print(f"# {machine()} (device class {device_class()}), load {os.getloadavg()[0]:.1f}")
    print(f"# torch {torch.__version__}, openvino {ov.__version__}, onnxruntime {ort.__version__}; 1 thread")
    print(f"# median of {args.reps} after a warm-up, back-ends alternating; (Nx) = torch eager time / back-end time")
    cases = [c for c in CASES if c.bundled] if args.quick else CASES
    if args.only:
        wanted = [o.lower() for o in args.only.split(",")]
        cases = [c for c in cases if any(c.label.lower().startswith(o) for o in wanted)]
    table: dict[str, dict[str, Any]] = {}
    dtypes = (torch.float32, torch.bfloat16) if args.bf16 else (torch.float32,)
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            for dtype in dtypes:
                arch, row, measured = bench(case, dtype, args, Path(tmp))
                print(row, flush=True)
                if case.bundled and dtype == torch.float32:
                    table[f"{arch}/auto"] = table[f"{arch}/exact"] = measured
    if args.write_table:
        write_table(table)
    print(f"# load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
