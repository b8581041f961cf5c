"""Quality/speed frontier of PnP-Nystra on the trained third-party models (NGswin x2, ESWT x4), one run side by side.

    .venv/bin/python benchmarks/nystra_frontier.py --ngswin-src /work/upstream/NGramSwin \
        --eswt-src /work/upstream/FriedRiceLab --datasets Set5 \
        --ngswin exact,m16i6,drop:exact,drop:m16i6 --eswt exact,m16i6,w2:exact,w2:m32i6

A setting is ``[PREFIX:]BODY``. BODY: ``exact`` or ``m<landmarks>i<iterations>`` (PnP-Nystra, plain exp kernel,
per-window pseudo-inverse scaling, guard on, as the front ends run it at the trained window), optionally followed by
``c<max_error>`` (the sampled-row check, PnPNystra.max_error), or ``plan=<file.json>`` (a per-layer plan written
by benchmarks/nystra_layers.py: one spec per attention module). PREFIX: ``drop`` (NGswin: relative-position bias
and shift mask not passed, the research code's setting; the baseline is then ``drop:exact``) or ``w<k>`` (ESWT:
stripes and shifts k times the trained (24, 6)/(6, 24), an untrained geometry; baseline ``w<k>:exact``).

Each row: Y-PSNR/SSIM (border = scale, 8-bit outputs, MATLAB-bicubic LR, as third_party.py) and seconds per
image (mean forward wall time, 1 thread by default, all settings of a model timed in the same process). Rows are
printed as they finish; the table is appended to benchmarks/results/third_party.md unless --no-write.
With --timing R, quality is not measured: each setting's forward on the dataset's first image is timed R times,
settings interleaved round-robin, and the minimum is kept. The time is the process's CPU time (time.process_time),
not wall time: with one thread it is the forward's compute, and on a shared, oversubscribed machine it does not count
the time the scheduler gave to other processes (wall times moved 3x between identical settings at a load of 10).
Only measure on Set5/Set14 here: settings are chosen on training crops (nystra_layers.py), never from this table.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import third_party as tp

from vsnystra.attention import AttentionSpec, Exact, PnPNystra
from vsnystra.attention.plan import LayerPlan
from vsnystra.training.metrics import psnr, ssim

_BODY = re.compile(r"^(exact|m(\d+)i(\d+)(?:c([0-9.]+))?|plan=(.+))$")


def nystra_spec(landmarks: int, iters: int, max_error: float | None = None) -> PnPNystra:
    """The front ends' trained-window PnP-Nystra: plain exp, per-window pinv scaling, guard on."""
    return PnPNystra(landmarks=landmarks, iters=iters, threshold=None, pinv_init="matrix", max_error=max_error)


def parse_setting(setting: str, modules: int) -> tuple[str, LayerPlan]:
    """(prefix, one spec per attention module) of a setting string (module docstring)."""
    prefix, _, body = setting.rpartition(":")
    match = _BODY.match(body)
    if not match or (prefix and not re.fullmatch(r"drop|w\d+", prefix)):
        raise SystemExit(f"nystra_frontier.py: bad setting {setting!r}; use e.g. exact, m16i6, drop:m16i6, w2:m32i6")
    if match.group(5):
        plan = LayerPlan.from_json(json.loads(Path(match.group(5)).read_text()))
        if len(plan) != modules:
            raise SystemExit(f"nystra_frontier.py: {match.group(5)} has {len(plan)} layers, the model {modules}")
        return prefix, plan
    spec: AttentionSpec = Exact()
    if match.group(2):
        chk = float(match.group(4)) if match.group(4) else None
        spec = nystra_spec(int(match.group(2)), int(match.group(3)), chk)
    return prefix, LayerPlan((spec,) * modules)


def route_plan(model: nn.Module, cls: type[nn.Module], forward: Callable[..., Any], plan: LayerPlan) -> None:
    """Send the i-th ``cls`` module of ``model`` through the seam with plan.specs[i]."""
    mods = [m for m in model.modules() if isinstance(m, cls)]
    for mod, spec in zip(mods, plan.specs, strict=True):
        mod.forward = functools.partial(forward, mod, spec)


def attention_modules(arch: tp.Arch) -> int:
    return sum(isinstance(m, arch.attn_cls) for m in arch.model.modules())


def configure(arch: tp.Arch, setting: str) -> None:
    prefix, plan = parse_setting(setting, attention_modules(arch))
    forward = arch.forward
    if prefix == "drop":
        if arch.wide:
            raise SystemExit(f"nystra_frontier.py: {arch.name} has no bias or mask to drop ({setting})")
        forward = functools.partial(tp.ngswin_forward, terms=False)
    factor = 1
    if prefix.startswith("w"):
        if not arch.wide:
            raise SystemExit(f"nystra_frontier.py: {arch.name}'s window is fixed by its bias table ({setting})")
        factor = int(prefix[1:])
    if arch.wide:
        tp.eswt_windows(arch.model, arch.attn_cls, factor)
    route_plan(arch.model, arch.attn_cls, forward, plan)


Row = tuple[str, str, str, float, float, float]


def evaluate(arch: tp.Arch, ds: str, setting: str, limit: int) -> Row:
    scores: list[tuple[float, float]] = []
    secs = 0.0
    count = 0
    for _, lr, hr in tp.sr_cases(ds, arch.scale, limit):
        t0 = time.perf_counter()
        with torch.no_grad():
            out = arch.run(lr.unsqueeze(0))[0]
        secs += time.perf_counter() - t0
        count += 1
        s = arch.scale
        scores.append((psnr(out, hr, s, y_channel=True), ssim(out, hr, s, y_channel=True)))
    p, q = np.mean(scores, axis=0)
    return arch.name, f"{ds} x{arch.scale}", setting, float(p), float(q), secs / max(count, 1)


def timing(arch: tp.Arch, ds: str, settings: Sequence[str], reps: int) -> list[Row]:
    """Min forward CPU time per setting on the dataset's first image, settings interleaved (NaN quality columns)."""
    name, lr, _ = next(tp.sr_cases(ds, arch.scale, 1))
    best = dict.fromkeys(settings, float("inf"))
    for _ in range(reps):
        for setting in settings:
            configure(arch, setting)
            t0 = time.process_time()
            with torch.no_grad():
                arch.run(lr.unsqueeze(0))
            best[setting] = min(best[setting], time.process_time() - t0)
    data = f"{ds}/{name} x{arch.scale} ({lr.shape[-1]}x{lr.shape[-2]})"
    return [(arch.name, data, s, float("nan"), float("nan"), best[s]) for s in settings]


def table(rows: Sequence[Row]) -> list[str]:
    """Markdown rows with the drop and the time ratio against the first exact setting of the same prefix."""
    base: dict[tuple[str, str, str], Row] = {}
    for r in rows:
        prefix = r[2].rpartition(":")[0]
        if r[2].rpartition(":")[2] == "exact":
            base.setdefault((r[0], r[1], prefix), r)
    out = [
        "| model | data | setting | PSNR Y | SSIM Y | drop vs exact (dB) | s/image | time vs exact |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b = base.get((r[0], r[1], r[2].rpartition(":")[0]))
        drop = f"{b[3] - r[3]:.2f}" if b else "-"
        ratio = f"{r[5] / b[5]:.2f}x" if b else "-"
        if r[3] != r[3]:  # timing row: no quality measured
            drop = "-"
        out.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.2f} | {r[4]:.4f} | {drop} | {r[5]:.2f} | {ratio} |")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ngswin-src", type=Path)
    ap.add_argument("--eswt-src", type=Path)
    ap.add_argument("--weights", type=Path, default=tp.WEIGHTS)
    ap.add_argument("--datasets", default="Set5")
    ap.add_argument("--limit", type=int, default=0, help="images per dataset (0 = all)")
    ap.add_argument("--ngswin", default="exact,m16i6", help="NGswin settings, comma-separated")
    ap.add_argument("--eswt", default="exact,m16i6", help="ESWT settings, comma-separated")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timing", type=int, default=0, help="R > 0: interleaved timing only, min of R forwards")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if not args.ngswin_src and not args.eswt_src:
        ap.error("pass --ngswin-src and/or --eswt-src (local checkouts of the upstream repositories)")
    torch.set_num_threads(args.threads)
    jobs: list[tuple[tp.Arch, list[str]]] = []
    if args.ngswin_src:
        jobs.append((tp.build_ngswin(args.ngswin_src, args.weights), args.ngswin.split(",")))
    if args.eswt_src:
        jobs.append((tp.build_eswt(args.eswt_src, args.weights), args.eswt.split(",")))
    rows: list[Row] = []
    for arch, settings in jobs:
        for ds in args.datasets.split(","):
            if args.timing:
                rows += timing(arch, ds, settings, args.timing)
                for r in rows[-len(settings) :]:
                    print(f"{r[0]:14s} {r[1]:10s} {r[2]:28s} {r[5]:.2f} s CPU (min of {args.timing})", flush=True)
                continue
            for setting in settings:
                configure(arch, setting)
                rows.append(evaluate(arch, ds, setting, args.limit))
                r = rows[-1]
                print(f"{r[0]:14s} {r[1]:10s} {r[2]:28s} {r[3]:.2f} {r[4]:.4f} {r[5]:.2f} s/img", flush=True)
    lines = [
        "",
        f"### {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `benchmarks/nystra_frontier.py "
        f"{shlex.join(sys.argv[1:])}`",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), fp32, limit {args.limit or 'all'} images. "
        "m<L>i<K> = PnPNystra(landmarks=L, iters=K, threshold=None, pinv_init='matrix', guard=True); c<e> adds "
        "max_error=e; drop: = bias and shift mask not passed; w<k>: = ESWT stripes k times (24, 6)/(6, 24). Drop and "
        "time ratio against the exact setting with the same prefix in this run.",
        "",
        *table(rows),
    ]
    print("\n".join(lines), flush=True)
    if not args.no_write:
        with tp.RESULTS.open("a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
