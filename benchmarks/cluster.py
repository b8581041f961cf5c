"""`vsnystra restore --ray` on this machine: 1 worker node vs 2 (one CPU each), the overhead of segmenting as a share
of restore time, and a model of throughput on N GPU nodes built from the measured costs.

Measured in one run, side by side (bundled ``rvrt-denoise-small`` at its trained chunking 4/2, one torch thread per
worker, x265 ultrafast; the clip has no scene cut, so every segment boundary needs temporal context):

* ``model``: the restorer alone on the decoded frames in memory, seconds per frame (r);
* ``ray-1`` / ``ray-2``: a ``ray.cluster_utils.Cluster`` on 127.0.0.1 with 1 or 2 worker nodes of one CPU; wall
  time of the restore with the workers already up (start-up, i.e. worker process and model load, reported apart);
* per-segment costs: fixed I/O per segment (open, seek, encoder start and flush, read-back check, sha256, commit)
  and I/O per frame, fitted from identity-model runs at two segment lengths; context frames computed twice (from
  the planner); planning pass and assembly per frame at the benchmark size and at 720x576;
* the GPU model: per-frame time of a worker = r_gpu + I/O per frame + (fixed per segment) / N + context share,
  times N workers, capped by what one driver core plans and assembles per second (``--gpu-r`` values are
  assumptions about the GPU, not measurements).

    .venv/bin/python benchmarks/cluster.py                                  # markdown report on stdout
    .venv/bin/python benchmarks/cluster.py --frames 24 --size 144 --segment-frames 6 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before ray is imported: loopback only
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _identity_loaded(temporal: tuple[int, int]) -> Any:
    """A model that returns its input, with RVRT's temporal bookkeeping: the pipeline's own costs."""
    import torch

    from vsnystra.cli.model import LoadedModel

    def restorer(frames: Any) -> Any:
        yield from frames

    return LoadedModel(torch.nn.Identity(), "rvrt", 1, torch.device("cpu"), torch.float32, restorer, temporal)


def _run_local(src: Path, out: Path, loaded: Any, seg: int, codec: str) -> Any:
    from vsnystra.cli.distribute import Driver
    from vsnystra.cli.filework import Options
    from vsnystra.cli.local_executor import LocalExecutor
    from vsnystra.cli.media import EncodeSettings

    opts = Options(out_dir=out, encode=EncodeSettings(codec=codec, preset="ultrafast"), segment_frames=seg)
    opts.progress = False
    driver = Driver([src], LocalExecutor(loaded), opts)
    summary = driver.run()
    assert summary.done, summary.render()
    return next(iter(driver.files.values()))


def io_costs(src: Path, work: Path, temporal: tuple[int, int], lengths: tuple[int, int]) -> dict[str, float]:
    """CPU seconds of a segment's own work (no model): fixed per segment and per frame read, from the medians at two
    segment lengths (CPU time, not wall: the shared machine's load inflates wall times); planning/assembly rates."""
    import statistics

    medians = []
    for n in lengths:
        f = _run_local(src, work / f"io{n}", _identity_loaded(temporal), n, "x265")
        segs = f.plan.segments[1:-1] or f.plan.segments  # inner segments: full context on both sides
        reads = statistics.median(s.read[1] - s.read[0] for s in segs)
        medians.append((reads, statistics.median(float(f.records[s.index]["cpu_seconds"]) for s in segs)))
        scan, join, frames = f.scan_s, f.assemble_s, f.plan.frames
    (x0, y0), (x1, y1) = medians
    per_frame = (y1 - y0) / (x1 - x0)
    return {"fixed": y0 - per_frame * x0, "per_frame": per_frame, "scan": scan / frames, "join": join / frames}


def duplicated(temporal: tuple[int, int], seg: int) -> float:
    """Model work (frames through the model) beyond one pass, as a share of one pass (one long shot)."""
    from vsnystra.cli.segments import chunk_spans, plan_segments

    frames = 100 * seg
    spans = chunk_spans((0, frames), temporal)
    one_pass = sum(b - a for a, b in spans)
    segmented = 0
    for s in plan_segments(frames, [], temporal, seg):
        ra, rb = s.read  # the restorer lays out exactly the chunks of the shot that lie inside the read range
        segmented += sum(b - a for a, b in spans if a >= ra and b <= rb)
    return segmented / one_pass - 1.0


def ray_run(src: Path, out: Path, nodes: int, settings: Any, seg: int) -> dict[str, float]:
    import ray
    from ray.cluster_utils import Cluster

    from vsnystra.cli import ray_executor
    from vsnystra.cli.distribute import Driver
    from vsnystra.cli.filework import Options
    from vsnystra.cli.media import EncodeSettings

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        t = time.perf_counter()
        ex = ray_executor.connect("auto", settings, threads=1)
        ready = ex.wait_ready(timeout=600)
        startup = time.perf_counter() - t
        opts = Options(out_dir=out, encode=EncodeSettings(codec="x265", preset="ultrafast"), segment_frames=seg)
        opts.progress = False
        driver = Driver([src], ex, opts)
        t = time.perf_counter()
        summary = driver.run()
        wall = time.perf_counter() - t
        ex.close()
        assert summary.done and ready == nodes, summary.render()
        f = next(iter(driver.files.values()))
        busy = sum(float(r["seconds"]) for r in f.records.values())
        cpu = sum(float(r["cpu_seconds"]) for r in f.records.values())
        segs = len(f.records)
        return {"wall": wall, "startup": startup, "busy": busy, "cpu": cpu, "frames": f.plan.frames, "segments": segs}
    finally:
        ray.shutdown()
        cluster.shutdown()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--size", type=int, default=144, help="square frame size (RVRT denoise needs >= 132)")
    p.add_argument("--segment-frames", type=int, default=6)
    p.add_argument("--default-segment", type=int, default=600)
    p.add_argument("--repeats", type=int, default=1, help="Ray runs per side (alternating; median reported)")
    p.add_argument("--gpu-r", default="0.05,0.2,1.0", help="assumed GPU seconds per frame for the model")
    args = p.parse_args()

    import torch

    torch.set_num_threads(1)
    import av
    from restore_fakes import make_video

    from vsnystra.cli.model import load
    from vsnystra.cli.pipeline import _open_av_source
    from vsnystra.runtime.settings import Options

    settings = Options(model="rvrt-denoise-small", device="cpu", chunk=4, chunk_overlap=2)
    temporal = (4, 2)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = make_video(work / "clip.mkv", args.frames, w=args.size, h=args.size, codec="libx264", audio=True)
        sd = make_video(work / "sd.mkv", 96, w=720, h=576, codec="libx264", audio=True)
        with av.open(str(src)) as c:
            frames = list(_open_av_source(c).frames)
        loaded = load(settings)
        t, cpu = time.perf_counter(), time.process_time()
        list(loaded.restorer(iter(frames)))
        r_wall = (time.perf_counter() - t) / len(frames)
        r = (time.process_time() - cpu) / len(frames)  # CPU s (one thread): what the shares below divide by
        io = io_costs(src, work, temporal, (2, 8))
        io_sd = io_costs(sd, work / "sd", temporal, (8, 32))
        trials: dict[int, list[dict[str, float]]] = {1: [], 2: []}
        for k in range(args.repeats):  # alternate, so a change in the machine's load hits both sides
            for n in (1, 2) if k % 2 == 0 else (2, 1):
                trials[n].append(ray_run(src, work / f"ray{n}-{k}", n, settings, args.segment_frames))
        runs = {n: sorted(t, key=lambda x: x["wall"])[len(t) // 2] for n, t in trials.items()}  # median wall

    load_avg = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load_avg[0]:.1f} / {load_avg[1]:.1f} / {load_avg[2]:.1f}")
    print(f"clip: {args.frames} frames {args.size}x{args.size}, segment {args.segment_frames} frames, x265 ultrafast\n")
    print("| measurement | value |\n|---|---|")
    print(f"| model alone, s/frame: CPU (r) / wall | {r:.3f} / {r_wall:.3f} |")
    for n, run in runs.items():
        fps = run["frames"] / run["wall"]
        idle = run["wall"] * n - run["busy"]
        print(f"| ray-{n}: wall s / fps / worker start-up s | {run['wall']:.1f} / {fps:.3f} / {run['startup']:.1f} |")
        print(
            f"| ray-{n}: idle worker-s per segment (first planning, scheduling, tail) | {idle / run['segments']:.2f} |"
        )
        print(f"| ray-{n}: CPU the workers got while busy (CPU s / busy s) | {run['cpu'] / run['busy']:.0%} |")
        print(f"| ray-{n}: worker CPU s in all | {run['cpu']:.1f} |")
    speedup = runs[1]["wall"] / runs[2]["wall"]
    print(f"| **2 nodes vs 1** | **{speedup:.2f}x** |")
    for name, c in (("benchmark size", io), ("720x576", io_sd)):
        print(f"| {name}: segment I/O, CPU s fixed / per frame | {c['fixed']:.3f} / {c['per_frame']:.4f} |")
        print(f"| {name}: planning pass fps / assembly fps (wall) | {1 / c['scan']:.0f} / {1 / c['join']:.0f} |")

    sched = max(0.0, (runs[2]["wall"] * 2 - runs[2]["busy"]) / runs[2]["segments"])
    print("\nOverhead of segmenting as a share of restore time (r and costs measured above, this machine):\n")
    print("| segment frames | context twice | fixed per segment | scheduling | total | total, chunking 16/2 |")
    print("|---|---|---|---|---|---|")
    for seg in (args.segment_frames, 150, 300, args.default_segment, 1200):
        dup, dup16 = duplicated(temporal, seg), duplicated((16, 2), seg)
        rest = (io["fixed"] + sched) / (seg * r)
        print(
            f"| {seg} | {dup:.1%} | {io['fixed'] / (seg * r):.2%} | {sched / (seg * r):.2%} | {dup + rest:.1%} "
            f"| {dup16 + rest:.1%} |"
        )

    print(
        "\nModel of throughput on N GPU nodes at 720x576, one worker per GPU, segment "
        f"{args.default_segment}, chunking 16/2 (r_gpu assumed):\n"
    )
    ns = (1, 2, 4, 8, 16, 32, 64)
    print("| r_gpu s/frame | " + " | ".join(f"N={n}" for n in ns) + " |")
    print("|---" * (len(ns) + 1) + "|")
    cap = min(1 / io_sd["scan"], 1 / io_sd["join"])
    dup16 = duplicated((16, 2), args.default_segment)
    for rg in (float(v) for v in args.gpu_r.split(",")):
        per_frame = rg * (1 + dup16) + io_sd["per_frame"] + io_sd["fixed"] / args.default_segment
        cells = [f"{min(n / per_frame, cap):.1f} fps" for n in ns]
        print(f"| {rg} | " + " | ".join(cells) + " |")
    print(f"\nDriver cap (one core plans and assembles): {cap:.0f} fps at 720x576.")


if __name__ == "__main__":
    main()
