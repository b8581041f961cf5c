"""Peak memory of restore_video on a long clip vs a short one: memory must follow the chunk, not the length.

    .venv/bin/python benchmarks/rvrt_memory.py                        # 100 vs 20 frames, 320x180, chunk 10
    .venv/bin/python benchmarks/rvrt_memory.py --frames 100,20 --chunk 10 --size 320x180 --no-write

Model: the small non-blind denoiser of the parity fixtures (../shared/fixtures/parity/rvrt_denoise_small.pth, C 24,
official DAVIS layout; random weights). Each length runs in its own subprocess that streams synthetic noisy frames
into restore_video (iterator in, iterator out, outputs reduced to a checksum as a VapourSynth client would consume
them) and reports ru_maxrss. "increment" subtracts the RSS measured after loading the model and one warm-up chunk,
i.e. the memory the sequence itself costs. CPU only (CUDA: see torch.cuda.max_memory_allocated in the same way).
Results are appended to benchmarks/results/rvrt.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT.parent / "shared" / "fixtures" / "parity" / "rvrt_denoise_small.pth"
RESULTS = ROOT / "benchmarks" / "results" / "rvrt.md"


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(frames: int, chunk: int, overlap: int, w: int, h: int) -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    from vsnystra import load_model
    from vsnystra.runtime.video import restore_video

    model = load_model(CKPT)
    g = torch.Generator().manual_seed(0)

    def source(n: int):  # type: ignore[no-untyped-def]
        for _ in range(n):
            yield torch.rand(3, h, w, generator=g)

    for _ in restore_video(model, source(2), chunk=chunk, chunk_overlap=overlap, sigma=25):
        pass  # warm-up: allocator pools, lazy inits
    base = _rss_mib()
    t0 = time.perf_counter()
    total = 0.0
    for y in restore_video(model, source(frames), chunk=chunk, chunk_overlap=overlap, sigma=25):
        total += float(y.sum())
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"frames": frames, "peak_mib": peak, "base_mib": base, "seconds": secs, "checksum": total}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", default="100,20")
    ap.add_argument("--chunk", type=int, default=10)
    ap.add_argument("--overlap", type=int, default=2)
    ap.add_argument("--size", default="320x180")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    w, h = map(int, args.size.lower().split("x"))
    if args.child:
        child(args.child, args.chunk, args.overlap, w, h)
        return
    rows = []
    for n in map(int, args.frames.split(",")):
        cmd = [sys.executable, __file__, "--child", str(n), "--chunk", str(args.chunk), "--overlap", str(args.overlap)]
        out = subprocess.run([*cmd, "--size", args.size], check=True, capture_output=True, text=True, env=os.environ)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1])
    lines = [
        f"\n## RVRT memory: restore_video streaming, {w}x{h}, chunk {args.chunk} overlap {args.overlap}, "
        f"rvrt_denoise_small (C 24), CPU, {time.strftime('%Y-%m-%d %H:%M')}\n",
        f"Command: `.venv/bin/python benchmarks/rvrt_memory.py --frames {args.frames} --chunk {args.chunk} "
        f"--size {args.size}`\n",
        "| frames | peak RSS MiB | increment over loaded model MiB | s/frame |",
        "|---|---|---|---|",
    ]
    for r in rows:
        inc = r["peak_mib"] - r["base_mib"]
        lines.append(f"| {r['frames']} | {r['peak_mib']:.0f} | {inc:.0f} | {r['seconds'] / r['frames']:.2f} |")
    if len(rows) >= 2:
        a, b = rows[0], rows[1]
        ratio = a["peak_mib"] / b["peak_mib"]
        inc_ratio = (a["peak_mib"] - a["base_mib"]) / max(b["peak_mib"] - b["base_mib"], 1e-9)
        verdict = "meets" if ratio <= 1.5 else "MISSES"
        lines.append(
            f"\nPeak ratio {a['frames']} vs {b['frames']} frames: {ratio:.2f}x (increment ratio {inc_ratio:.2f}x); "
            f"{verdict} the <= 1.5x target."
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        with RESULTS.open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
