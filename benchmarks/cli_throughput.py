"""Throughput of `vsnystra restore` against the vspipe pipeline on the same clip (target: CLI within 10 %).

Sides, each a fresh process so start-up (imports, model load) counts alike, run alternately over ``--repeats``
rounds; the median round is reported:
  * "vspipe" (baseline): ``vspipe -c y4m bench.vpy - | ffmpeg -f yuv4mpegpipe -i - -c:v libx265 …`` where the
    script reads the clip with examples/avsource.py (PyAV) and calls ``core.nystra.RVRT`` (or SwinIR);
  * "CLI": ``python -m vsnystra restore clip.mkv --codec x265 …`` (same model, chunking, x265 settings; the CLI
    also copies the audio track);
  * "direct" (reference only, in-process, no decode/encode/start-up): ``restore_video`` / ``restore_image`` on
    the frames already in memory as one tensor.

    .venv/bin/python benchmarks/cli_throughput.py                        # RVRT denoise fixture, markdown table
    .venv/bin/python benchmarks/cli_throughput.py --model swinir --frames 8 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARITY = ROOT.parent / "shared" / "fixtures" / "parity"
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

CASES = {
    # name: (filter, checkpoint, extra args for the filter / CLI)
    "rvrt": ("RVRT", "rvrt_denoise_small.pth", {"sigma": 25.0, "chunk": 8}),
    "swinir": ("SwinIR", "swinir_classical_x2.pth", {}),
}

VPY = """
import sys
sys.path.insert(0, {examples!r})
import vapoursynth as vs
from vapoursynth import core
import avsource
core.num_threads = {vs_threads}
clip = avsource.source({clip!r})
clip = core.nystra.{filter}(clip, model={model!r}, device="cpu", attention={attention!r}{extra})
clip = core.resize.Bicubic(clip, format=vs.YUV420P10, matrix_s="709")
clip.set_output()
"""


def run_vspipe(vpy: Path, out: Path, env: dict[str, str], x265: list[str]) -> float:
    vspipe = shutil.which("vspipe", path=str(Path(sys.executable).parent)) or "vspipe"
    t0 = time.perf_counter()
    pipe = subprocess.Popen([vspipe, "-c", "y4m", str(vpy), "-"], stdout=subprocess.PIPE, env=env)
    enc = subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "yuv4mpegpipe", "-i", "-", *x265, str(out)],
        stdin=pipe.stdout,
        env=env,
        check=False,
    )
    if pipe.stdout is not None:
        pipe.stdout.close()
    rc = pipe.wait()
    dt = time.perf_counter() - t0
    if rc or enc.returncode:
        raise RuntimeError(f"vspipe pipeline failed (vspipe {rc}, ffmpeg {enc.returncode})")
    return dt


def run_cli(
    clip: Path, out_dir: Path, model: Path, extra: dict[str, float], env: dict[str, str], attention: str
) -> float:
    args = [sys.executable, "-m", "vsnystra", "-q", "restore", str(clip), "-o", str(out_dir), "--overwrite"]
    args += ["--attention", attention]
    args += ["--model", str(model), "--device", "cpu", "--codec", "x265", "--preset", "ultrafast", "--crf", "18"]
    for k, v in extra.items():
        args += [f"--{k}", str(int(v) if k == "chunk" else v)]
    t0 = time.perf_counter()
    subprocess.run(args, env=env, check=True, cwd=ROOT)
    return time.perf_counter() - t0


def run_direct(clip: Path, model_path: Path, extra: dict[str, float], threads: int, attention: str) -> float:
    import av
    import numpy as np
    import torch

    from vsnystra.archs.base import AttentionConfig
    from vsnystra.archs.registry import detect_file
    from vsnystra.runtime.cache import default_cache
    from vsnystra.runtime.image import restore_image
    from vsnystra.runtime.settings import attention_spec
    from vsnystra.runtime.video import restore_video

    torch.set_num_threads(threads)
    with av.open(str(clip)) as c:
        arrs = [f.to_ndarray(format="rgb48le") for f in c.decode(video=0)]
    frames = torch.from_numpy(np.stack(arrs).astype(np.float32) / 65535.0).permute(0, 3, 1, 2).contiguous()
    setting = AttentionConfig(spec=attention_spec(attention, None, None, detect_file(model_path)))
    model = default_cache().get(model_path, device=torch.device("cpu"), attention=setting)
    t0 = time.perf_counter()
    with torch.inference_mode():
        if model.info.arch == "rvrt":
            kw = {"sigma": extra["sigma"], "chunk": int(extra["chunk"])} if "sigma" in extra else {}
            restore_video(model, frames, **kw)
        else:
            for f in frames:
                restore_image(model, f)
    return time.perf_counter() - t0


def main() -> None:
    from test_cli import make_clip  # the same clip generator as the tests

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(CASES), default="rvrt")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, nargs=2, default=(136, 136), metavar=("W", "H"))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="OMP/MKL/torch threads, both sides")
    p.add_argument("--vs-threads", type=int, default=1, help="VapourSynth core threads (vspipe side)")
    p.add_argument("--attention", default="exact", choices=["exact", "nystra", "auto"], help="both sides")
    args = p.parse_args()

    func, ckpt, extra = CASES[args.model]
    model = PARITY / ckpt
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    x265 = ["-c:v", "libx265", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p10le"]
    x265 += ["-x265-params", "log-level=error"]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        clip = make_clip(tmp / "clip.mkv", n=args.frames, w=args.size[0], h=args.size[1])
        extra_vs = "".join(f", {k}={v!r}" for k, v in extra.items())
        extra_vs = extra_vs.replace(f"chunk={extra.get('chunk')!r}", f"chunk={int(extra.get('chunk', 0))}")
        vpy = tmp / "bench.vpy"
        vpy.write_text(
            VPY.format(
                examples=str(ROOT / "examples"),
                vs_threads=args.vs_threads,
                clip=str(clip),
                filter=func,
                model=str(model),
                extra=extra_vs,
                attention=args.attention,
            )
        )
        times: dict[str, list[float]] = {"vspipe": [], "cli": [], "direct": []}
        for _ in range(args.repeats):
            times["vspipe"].append(run_vspipe(vpy, tmp / "vs.mkv", env, x265))
            times["cli"].append(run_cli(clip, tmp / "cli", model, extra, env, args.attention))
            times["direct"].append(run_direct(clip, model, extra, args.threads, args.attention))
    med = {k: statistics.median(v) for k, v in times.items()}
    n = args.frames
    print(
        f"{args.model} ({ckpt}), {n} frames {args.size[0]}x{args.size[1]}, attention {args.attention}, CPU, "
        f"{args.threads} thread(s), "
        f"x265 ultrafast crf 18; median of {args.repeats} alternating rounds (wall time incl. process start-up "
        "and model load for vspipe and CLI)\n"
    )
    print("| side | median s | fps | vs vspipe (baseline) |")
    print("|---|---|---|---|")
    for k, label in (("vspipe", "vspipe → ffmpeg (baseline)"), ("cli", "vsnystra restore"), ("direct", "direct")):
        note = " (model only, in-process)" if k == "direct" else ""
        print(f"| {label}{note} | {med[k]:.2f} | {n / med[k]:.2f} | {med['vspipe'] / med[k]:.2f}x |")
    print(f"\nCLI time / vspipe time = {med['cli'] / med['vspipe']:.3f} (target <= 1.10)")
    print("raw seconds: " + "; ".join(f"{k} {', '.join(f'{t:.2f}' for t in v)}" for k, v in times.items()))


if __name__ == "__main__":
    main()
