"""Overhead of the VapourSynth layer: frames per second through nystra.* (in-process get_frame) vs the model.

Baseline ("direct"): the same model object called by restore_image / restore_video on the same frames, already in
memory as tensors. "VapourSynth": the same frames served by a VapourSynth clip, pulled through
vsnystra.vs.filters.<Filter> with get_frame (frame -> tensor conversion, chunk cache, tensor -> frame, props).
Both sides share one model instance (the filter's model cache), run in the same process and alternate ABBA over
``--repeats`` rounds; the overhead is the median of the paired ratios (VS round / the direct round next to it), so
machine noise hits both alike. A second, noise-robust figure times the model calls inside the VapourSynth run
(restore_image / restore_chunk wrapped with a timer): "outside model" = VS wall time / time inside model calls - 1.
A third compares process CPU time (all threads), which other users' load on the machine disturbs less than wall time.

    .venv/bin/python benchmarks/pipeline.py                      # all three models, markdown table on stdout
    .venv/bin/python benchmarks/pipeline.py --models swinir --frames 8 --repeats 3 --threads 2
    .venv/bin/python benchmarks/pipeline.py --half-precision     # CPU RGBH: bf16 vs fp32 accuracy and speed
    .venv/bin/python benchmarks/pipeline.py --vspipe             # SwinIR through vspipe -c y4m (examples/upscale.vpy)
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
import vapoursynth as vs

import vsnystra.vs.filters as filters
from vsnystra.archs.base import AttentionConfig
from vsnystra.runtime.cache import default_cache
from vsnystra.runtime.device import run_on_device
from vsnystra.runtime.image import restore_image
from vsnystra.runtime.memory import prefer_huge_pages
from vsnystra.runtime.video import restore_video
from vsnystra.vs.frames import tensor_to_frame

ROOT = Path(__file__).resolve().parents[1]
PARITY = ROOT.parent / "shared" / "fixtures" / "parity"
CASES = {
    # name: (filter, checkpoint, width, height, extra filter kwargs)
    "swinir": ("SwinIR", "swinir_classical_x2.pth", 128, 96, {}),
    "uformer": ("Uformer", "uformer_b_small.pth", 128, 128, {}),
    "rvrt": ("RVRT", "rvrt_sr_small.pth", 64, 48, {"chunk": 4, "chunk_overlap": 2}),
}


def make_frames(n: int, w: int, h: int) -> torch.Tensor:
    g = torch.from_numpy(np.random.default_rng(0).random((n, 3, h // 4, w // 4), dtype=np.float32))
    return torch.nn.functional.interpolate(g, size=(h, w), mode="bilinear", align_corners=False).contiguous()


def clip_of(frames: torch.Tensor) -> vs.VideoNode:
    """A clip serving the given tensors (what a source filter would deliver)."""
    n, _, h, w = frames.shape
    blank = vs.core.std.BlankClip(format=vs.RGBS, width=w, height=h, length=n, keep=True)
    return vs.core.std.ModifyFrame(blank, blank, lambda n, f: tensor_to_frame(frames[n], f))


THREAD_NOTE = """The direct baseline runs on vsnystra's inference thread (run_on_device), like the filters' model calls:
on this machine, under load, the same torch call on the process's main thread burned ~6x more CPU in OpenMP
spinning and took ~6x longer than on any other thread, which would flatter the VapourSynth side."""

CPU_TIMES: list[float] = []  # process CPU seconds of every timed() call, in call order


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of fn(); its process CPU seconds (all threads) go to CPU_TIMES."""
    c0 = time.process_time()
    t0 = time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    CPU_TIMES.append(time.process_time() - c0)
    return wall


class InsideTimer:
    """Wraps the runtime entry points the filters call, summing the time spent inside them."""

    def __init__(self) -> None:
        self.total = 0.0
        self._saved = (filters.restore_image, filters.restore_chunk)

    def _wrap(self, fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def timed_call(*args: object, **kwargs: object) -> torch.Tensor:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total += time.perf_counter() - t0

        return timed_call

    def __enter__(self) -> InsideTimer:
        filters.restore_image = self._wrap(self._saved[0])  # type: ignore[assignment]
        filters.restore_chunk = self._wrap(self._saved[1])  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        filters.restore_image, filters.restore_chunk = self._saved


def bench(name: str, n_frames: int, repeats: int) -> dict[str, object]:
    func, ckpt, w, h, extra = CASES[name]
    path = PARITY / ckpt
    frames = make_frames(n_frames, w, h)
    clip = clip_of(frames)
    kw = {"model": str(path), "attention": "exact", "device": "cpu", **extra}
    model = default_cache().get(path, device=torch.device("cpu"), attention=AttentionConfig())

    def direct_body() -> None:
        with torch.no_grad():
            if func == "RVRT":
                restore_video(model, frames, chunk=extra["chunk"], chunk_overlap=extra["chunk_overlap"])
            else:
                for i in range(n_frames):
                    restore_image(model, frames[i])

    def direct() -> None:  # on the same inference thread the filters use (see THREAD_NOTE)
        run_on_device(torch.device("cpu"), direct_body)

    inside: list[float] = []

    def through_vs() -> None:
        with InsideTimer() as timer:
            out = getattr(filters, func)(clip, **kw)  # a fresh node: nothing cached from the previous round
            for i in range(n_frames):
                out.get_frame(i)
        inside.append(timer.total)

    direct()  # warm-up (allocator, lazy inits)
    through_vs()
    inside.clear()
    a, b, ca, cb = [], [], [], []
    for r in range(repeats):  # ABBA order: drifts in machine load cancel in the paired ratios
        if r % 2 == 0:
            a.append(timed(direct))
            ca.append(CPU_TIMES[-1])
            b.append(timed(through_vs))
            cb.append(CPU_TIMES[-1])
        else:
            b.append(timed(through_vs))
            cb.append(CPU_TIMES[-1])
            a.append(timed(direct))
            ca.append(CPU_TIMES[-1])
    return {
        "model": f"{func} ({ckpt})",
        "frames": n_frames,
        "direct_fps": n_frames / statistics.median(a),
        "vs_fps": n_frames / statistics.median(b),
        "overhead": statistics.median(tb / ta for ta, tb in zip(a, b, strict=True)) - 1.0,
        "outside": statistics.median(tb / ti for tb, ti in zip(b, inside, strict=True)) - 1.0,
        "cpu": statistics.median(y / x for x, y in zip(ca, cb, strict=True)) - 1.0,
    }


def vspipe_rows(n_frames: int, repeats: int) -> list[str]:
    """SwinIR through ``vspipe -c y4m examples/upscale.vpy`` (output to /dev/null, incl. the YUV conversion and
    Y4M writing) vs restore_image on the same synthetic frames in this process. vspipe's own "Output N frames in
    S seconds" is used: it excludes script evaluation (imports, model loading)."""
    import re
    import subprocess
    import sys

    sys.path.insert(0, str(ROOT / "examples"))
    import avsource

    w, h = 128, 96
    ckpt = PARITY / "swinir_classical_x2.pth"
    clip = avsource.synthetic(w, h, n_frames)
    frames = [torch.from_numpy(np.stack([np.asarray(clip.get_frame(i)[p]) for p in range(3)])) for i in range(n_frames)]
    model = default_cache().get(ckpt, device=torch.device("cpu"), attention=AttentionConfig())
    vspipe = Path(sys.executable).parent / "vspipe"
    cmd = [
        str(vspipe),
        "-c",
        "y4m",
        "examples/upscale.vpy",
        "/dev/null",
        "-a",
        f"model={ckpt}",
        "-a",
        f"width={w}",
        "-a",
        f"height={h}",
        "-a",
        f"frames={n_frames}",
        "-a",
        "attention=exact",
        "-a",
        "device=cpu",
    ]

    def direct_body() -> None:
        with torch.no_grad():
            for f in frames:
                restore_image(model, f)

    def direct() -> None:
        run_on_device(torch.device("cpu"), direct_body)

    def through_vspipe() -> float:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
        m = re.search(r"Output (\d+) frames in ([0-9.]+) seconds", proc.stderr)
        if m is None:
            raise RuntimeError(f"vspipe printed no timing: {proc.stderr[-500:]}")
        return float(m.group(2))

    direct()
    a, b = [], []
    for r in range(repeats):
        if r % 2 == 0:
            a.append(timed(direct))
            b.append(through_vspipe())
        else:
            b.append(through_vspipe())
            a.append(timed(direct))
    ratio = statistics.median(y / x for x, y in zip(a, b, strict=True)) - 1.0
    return [
        "| model | input | frames | direct fps (baseline) | vspipe fps | vspipe vs direct (paired) |",
        "|---|---|---|---|---|---|",
        f"| SwinIR (swinir_classical_x2.pth) | {w}x{h} | {n_frames} | {n_frames / statistics.median(a):.3f} | "
        f"{n_frames / statistics.median(b):.3f} | {100 * ratio:+.1f} % |",
    ]


def half_precision(repeats: int) -> list[str]:
    """CPU policy for RGBH: accuracy and speed of bf16 compute vs fp32 on the SwinIR and Uformer fixtures."""
    rows = [
        "| model | max abs diff bf16 vs fp32 | PSNR bf16 vs fp32 (dB) | fp32 s/frame | bf16 s/frame |",
        "|---|---|---|---|---|",
    ]
    for name in ("swinir", "uformer"):
        _, ckpt, w, h, _ = CASES[name]
        x = make_frames(1, w, h)[0].half().float()  # an RGBH frame
        m32 = default_cache().get(PARITY / ckpt, device=torch.device("cpu"), dtype=torch.float32)
        m16 = default_cache().get(PARITY / ckpt, device=torch.device("cpu"), dtype=torch.bfloat16)
        with torch.no_grad():
            y32 = restore_image(m32, x)
            y16 = restore_image(m16, x.bfloat16()).float()
            t32 = statistics.median(timed(partial(restore_image, m32, x)) for _ in range(repeats))
            t16 = statistics.median(timed(partial(restore_image, m16, x.bfloat16())) for _ in range(repeats))
        diff = (y16 - y32).abs().max().item()
        mse = ((y16 - y32) ** 2).mean().item()
        psnr = 10 * np.log10(1.0 / max(mse, 1e-20))
        rows.append(f"| {name} ({ckpt}) | {diff:.4f} | {psnr:.1f} | {t32:.3f} | {t16:.3f} |")
    return rows


def main() -> None:
    prefer_huge_pages()  # as the front ends do; THP_MEM_ALLOC_ENABLE=0 in the environment measures without
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="swinir,uformer,rvrt")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default, as vspipe)")
    p.add_argument("--vs-threads", type=int, default=2, help="VapourSynth core threads")
    p.add_argument("--half-precision", action="store_true", help="measure the CPU RGBH policy instead")
    p.add_argument("--vspipe", action="store_true", help="SwinIR through vspipe (a separate process) instead")
    args = p.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    vs.core.num_threads = args.vs_threads
    print(
        f"CPU, torch {torch.__version__}, {torch.get_num_threads()} torch thread(s), "
        f"VapourSynth R{vs.core.core_version.release_major}, "
        f"{args.vs_threads} VS thread(s); median of {args.repeats} alternating rounds\n"
    )
    if args.half_precision:
        print("\n".join(half_precision(args.repeats)))
        return
    if args.vspipe:
        print("\n".join(vspipe_rows(args.frames, args.repeats)))
        return
    print(
        "| model | input | frames | direct fps (baseline) | VapourSynth fps | VS vs direct (paired rounds) "
        "| VS time outside model calls | VS vs direct, process CPU time (paired) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        r = bench(name.strip(), args.frames, args.repeats)
        _, _, w, h, _ = CASES[name.strip()]
        print(
            f"| {r['model']} | {w}x{h} | {r['frames']} | {r['direct_fps']:.3f} | {r['vs_fps']:.3f} | "
            f"{100 * r['overhead']:+.1f} % | {100 * r['outside']:+.2f} % | {100 * r['cpu']:+.1f} % |",
            flush=True,
        )


if __name__ == "__main__":
    main()
