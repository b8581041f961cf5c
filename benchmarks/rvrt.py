"""Seconds per frame of full-size RVRT (random weights) under five attention settings, with a time breakdown.

    .venv/bin/python benchmarks/rvrt.py                                  # 320x180, 4 frames, sr and dn
    .venv/bin/python benchmarks/rvrt.py --models sr --frames 4 --size 320x180 --settings a,b,e
    .venv/bin/python benchmarks/rvrt.py --quick                          # 192x144, 4 frames: a smoke run
    .venv/bin/python benchmarks/rvrt.py --baseline e06d52d --models dn --size 192x144 --settings a,d,e --rounds 2
    .venv/bin/python benchmarks/rvrt.py --gda --models dn,sr --size 256x256      # deformable attention alone

Models (official hyper-parameters, default init, random weights; cost does not depend on the values):
  sr  001/002/003 video SR x4: embed 144, groups [1]*6 (input = LR frames, output x4)
  dn  006 DAVIS non-blind denoising: embed 192, groups [1,3,4,6,8,4], 4 input channels (features at 1/4 size)
Settings:
  a  Naive at the trained window [2,8,8] (upstream's formulation: the stock model)
  b  Exact (fused SDPA) at the trained window
  c  PnP-Nystra (m 32, 6 iters, t 0) at the trained window, bias and mask kept
  d  Exact at the paper's [2,64,64] window, bias and mask dropped (the research code's "original")
  e  PnP-Nystra at [2,64,64] (m 32, 6 iters, t 0), bias and mask dropped (the paper's RVRT setting)
  f  Naive at [2,64,64], bias and mask dropped (matmul-softmax-matmul as the research code's "original" mech)
Breakdown (wall time inside): GDA = the four alignment modules (offset convs + deformable attention), window
attention = the attention seam calls of every STL, flow = SpyNet, rest = everything else. With 2 frames (one clip)
no alignment runs; use >= 4 frames. Settings run interleaved; each figure is the minimum over --reps forwards.
Results are appended to benchmarks/results/rvrt.md.

A/B mode (``--baseline REV [--new REV2]``): the package of git revision REV (and REV2) is extracted with
``git archive`` to a temporary folder; this script then runs alternately on REV and on REV2 (default: the working
tree), one fresh single-thread child per version and round, same models, inputs and settings; figures are minima
over rounds. Wall and process CPU time are both reported: on a shared machine CPU time is the steadier one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
# --code-root DIR (A/B children): import vsnystra from DIR instead of this checkout
_CODE_ROOT = sys.argv[sys.argv.index("--code-root") + 1] if "--code-root" in sys.argv else str(ROOT)
sys.path.insert(0, _CODE_ROOT)

import vsnystra.archs.rvrt_blocks as blocks  # noqa: E402
from vsnystra.archs.patch import patch_attention  # noqa: E402
from vsnystra.archs.registry import architecture  # noqa: E402
from vsnystra.archs.rvrt import RVRT, build  # noqa: E402
from vsnystra.archs.rvrt_gda import GuidedDeformAttnPack  # noqa: E402
from vsnystra.archs.spynet import SpyNet  # noqa: E402
from vsnystra.attention.specs import Exact, Naive  # noqa: E402
from vsnystra.runtime.memory import prefer_huge_pages  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "rvrt.md"
PNP = architecture("rvrt").paper_setting()[1]
SETTINGS: dict[str, tuple[str, Any, dict[str, Any]]] = {
    "a": ("Naive, trained [2,8,8] (stock)", Naive(), {}),
    "b": ("Exact, trained [2,8,8]", Exact(), {}),
    "c": ("PnP-Nystra, trained [2,8,8]", PNP, {}),
    "d": ("Exact, [2,64,64], no bias/mask", Exact(), {"window": [2, 64, 64], "bias": "drop", "mask": "drop"}),
    "e": ("PnP-Nystra, [2,64,64], no bias/mask", PNP, {"window": [2, 64, 64], "bias": "drop", "mask": "drop"}),
    "f": ("Naive, [2,64,64], no bias/mask", Naive(), {"window": [2, 64, 64], "bias": "drop", "mask": "drop"}),
}


def make_model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "sr":
        net = RVRT(upscale=4, embed_dims=(144, 144, 144), inputconv_groups=(1, 1, 1, 1, 1, 1))
    else:
        net = RVRT(upscale=1, embed_dims=(192, 192, 192), inputconv_groups=(1, 3, 4, 6, 8, 4), nonblind_denoising=True)
    return build(net.state_dict())


class Timers:
    """Wall-time buckets filled by forward hooks (GDA, flow) and a wrapper around the attention seam."""

    def __init__(self) -> None:
        self.t: dict[str, float] = defaultdict(float)
        self._start: dict[int, float] = {}

    def hook(self, model: torch.nn.Module) -> list[Any]:
        handles = []
        for m in model.modules():
            name = "gda" if isinstance(m, GuidedDeformAttnPack) else "flow" if isinstance(m, SpyNet) else None
            if name is None:
                continue
            handles.append(m.register_forward_pre_hook(lambda mod, args: self._begin(mod)))
            handles.append(m.register_forward_hook(lambda mod, args, out, n=name: self._end(mod, n)))
        return handles

    def _begin(self, mod: torch.nn.Module) -> None:
        self._start[id(mod)] = time.perf_counter()

    def _end(self, mod: torch.nn.Module, name: str) -> None:
        self.t[name] += time.perf_counter() - self._start.pop(id(mod))

    @contextmanager
    def seam(self) -> Iterator[None]:
        original: Callable[..., torch.Tensor] = blocks.attention

        def timed(*args: Any, **kwargs: Any) -> torch.Tensor:
            t0 = time.perf_counter()
            out = original(*args, **kwargs)
            self.t["attn"] += time.perf_counter() - t0
            return out

        blocks.attention = timed  # type: ignore[assignment]
        try:
            yield
        finally:
            blocks.attention = original  # type: ignore[assignment]


def run(model: torch.nn.Module, x: torch.Tensor, reps: int) -> dict[str, float]:
    best: dict[str, float] = {}
    for _ in range(reps):
        timers = Timers()
        handles = timers.hook(model)
        with timers.seam(), torch.no_grad():
            c0 = time.process_time()
            t0 = time.perf_counter()
            model(x)
            total = time.perf_counter() - t0
            cpu = time.process_time() - c0
        for h in handles:
            h.remove()
        if not best or total < best["total"]:
            best = {"total": total, **timers.t}
        best["cpu"] = min(cpu, best.get("cpu", cpu))
    best["rest"] = best["total"] - sum(best.get(k, 0.0) for k in ("gda", "attn", "flow"))
    return best


def measure(models: list[str], keys: list[str], w: int, h: int, frames: int, reps: int) -> dict[str, Any]:
    """{model: {setting: timings}} for the code on sys.path (one process, settings interleaved per model)."""
    out: dict[str, Any] = {}
    for kind in models:
        model = make_model(kind)
        c = 4 if kind == "dn" else 3
        g = torch.Generator().manual_seed(1)
        x = torch.rand(1, frames, c, h, w, generator=g)
        res: dict[str, dict[str, float]] = {}
        for key in keys:
            _, spec, patch = SETTINGS[key]
            patch_attention(model, spec, **patch)
            res[key] = run(model, x, reps)
            r = res[key]
            print(f"{kind} {key}: {r['total'] / frames:.2f} s/frame {dict((k, round(v, 2)) for k, v in r.items())}")
        out[kind] = res
    return out


def gda_compare(models: list[str], w: int, h: int, reps: int) -> str:
    """Guided deformable attention alone at the feature size of each model: grid_sample vs gather formulation."""
    from vsnystra.archs import rvrt_gda

    lines = [
        f"\n## RVRT GDA alone, {w}x{h} input, {torch.get_num_threads()} threads, process CPU time, min of {reps}, "
        f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}\n",
        f"Command: `{' '.join(['.venv/bin/python', *sys.argv])}`\n",
        "| model | features | C' | grid_sample (before) ms | gather (now) ms | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    for kind in models:
        cq, fh, fw = (288, h, w) if kind == "sr" else (384, h // 4, w // 4)
        g = torch.Generator().manual_seed(0)
        # channels-last q and kv, as GuidedDeformAttnPack passes them
        q = torch.randn(2, fh, fw, cq, generator=g).permute(0, 3, 1, 2)
        kv = torch.randn(1, 2, fh, fw, 2 * cq, generator=g).permute(0, 1, 4, 2, 3)
        off = 3 * torch.randn(2, 2 * 12 * 9 * 2, fh, fw, generator=g)
        times = {"grid": float("inf"), "gather": float("inf")}
        for rnd in range(reps + 1):  # round 0 warms up; grid and gather alternate
            for name in times:
                t0 = time.process_time()
                if name == "grid":
                    rvrt_gda._deform_attn_grid(q, kv, off, 12, 12, 2, (3, 3), 1 << 26)
                else:
                    rvrt_gda.deform_attn(q, kv, off, heads=12, groups=12, clip=2)
                if rnd > 0:
                    times[name] = min(times[name], time.process_time() - t0)
        lines.append(
            f"| {kind} | {fw}x{fh} | {cq} | {1e3 * times['grid']:.0f} | {1e3 * times['gather']:.0f} "
            f"| {times['grid'] / times['gather']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def ab_compare(args: argparse.Namespace, w: int, h: int) -> str:
    """Alternate children on REV's package and on the working tree; markdown table of minima over rounds."""
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline], check=True, capture_output=True, text=True
    ).stdout.strip()
    cur = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.new or "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "vsnystra"], check=True, capture_output=True, text=True
    ).stdout.strip()
    new_label = cur if args.new else f"{cur}{' + uncommitted changes' if dirty else ''}"
    best: dict[str, dict[str, dict[str, dict[str, float]]]] = {"old": {}, "new": {}}
    with tempfile.TemporaryDirectory(prefix="rvrt_ab_") as tmp:
        roots = {"old": os.path.join(tmp, "old"), "new": os.path.join(tmp, "new") if args.new else str(ROOT)}
        for version, r in (("old", rev), ("new", args.new)):
            if r:
                archive = subprocess.run(
                    ["git", "-C", str(ROOT), "archive", r, "vsnystra"], check=True, capture_output=True
                ).stdout
                os.makedirs(roots[version])
                subprocess.run(["tar", "-x", "-C", roots[version]], input=archive, check=True)
        for rnd in range(args.rounds):
            for version, root in roots.items():
                cmd = [sys.executable, __file__, "--code-root", root, "--json", "--no-write", "--models", args.models]
                cmd += ["--settings", args.settings, "--size", f"{w}x{h}", "--frames", str(args.frames)]
                cmd += ["--reps", str(args.reps)]
                env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
                proc = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
                data = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"round {rnd} {version}: " + json.dumps(data), file=sys.stderr)
                for kind, res in data.items():
                    for key, r in res.items():
                        slot = best[version].setdefault(kind, {}).setdefault(key, {})
                        for m in ("total", "cpu"):
                            slot[m] = min(r[m], slot.get(m, r[m]))
                        if "gda" in r and r["total"] <= slot["total"]:
                            slot.update({k: r[k] for k in ("gda", "attn", "flow", "rest") if k in r})
    lines = [
        f"\n## RVRT A/B: {rev} (old) vs {new_label} (new), {w}x{h} input, {args.frames} frames, 1 thread per child, "
        f"{args.rounds} rounds, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}\n",
        f"Command: `{' '.join(['.venv/bin/python', *sys.argv])}`\n",
        "| model | setting | old s/frame (wall) | new s/frame (wall) | new vs old (wall) | old CPU s/frame | "
        "new CPU s/frame | new vs old (CPU) | new: GDA | attn | flow | rest |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for kind in best["new"]:
        for key in best["new"][kind]:
            o, n = best["old"][kind][key], best["new"][kind][key]
            share = [f"{100 * n.get(k, 0.0) / n['total']:.0f}%" for k in ("gda", "attn", "flow", "rest")]
            per = [o["total"], n["total"], o["cpu"], n["cpu"]]
            old_w, new_w, old_c, new_c = (f"{v / args.frames:.2f}" for v in per)
            lines.append(
                f"| {kind} | {key}: {SETTINGS[key][0]} | {old_w} | {new_w} | {per[0] / per[1]:.2f}x | {old_c} "
                f"| {new_c} | {per[2] / per[3]:.2f}x | " + " | ".join(share) + " |"
            )
        for a, b_ in (("d", "e"), ("a", "e"), ("f", "e")):
            if a in best["new"][kind] and b_ in best["new"][kind]:
                ratios = []
                for version in ("old", "new"):
                    r = best[version][kind]
                    ratios.append(
                        f"{version} {r[a]['total'] / r[b_]['total']:.2f}x (CPU {r[a]['cpu'] / r[b_]['cpu']:.2f}x)"
                    )
                notes.append(f"{kind}: {b_} vs {a} (baseline {a}: {SETTINGS[a][0]}): " + ", ".join(ratios))
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def main() -> None:
    prefer_huge_pages()  # as the front ends do; THP_MEM_ALLOC_ENABLE=0 in the environment measures without
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="sr,dn")
    ap.add_argument("--settings", default="a,b,c,d,e")
    ap.add_argument("--size", default="320x180", help="input WxH (LR for sr)")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="192x144, 4 frames")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--baseline", help="git revision to compare against (A/B mode, see above)")
    ap.add_argument("--new", help="A/B mode: git revision for the new side (default: the working tree)")
    ap.add_argument("--rounds", type=int, default=2, help="A/B mode: alternations old/new")
    ap.add_argument("--gda", action="store_true", help="time the GDA alone: grid_sample vs gather formulation")
    ap.add_argument("--code-root", help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    w, h = (192, 144) if args.quick else map(int, args.size.lower().split("x"))
    keys = args.settings.split(",")
    if args.json:
        print(json.dumps(measure(args.models.split(","), keys, w, h, args.frames, args.reps)))
        return
    if args.gda or args.baseline:
        text = gda_compare(args.models.split(","), w, h, max(args.reps, 3)) if args.gda else ab_compare(args, w, h)
        print(text)
        if not args.no_write:
            with RESULTS.open("a") as f:
                f.write(text)
        return
    lines = [
        f"\n## RVRT, {w}x{h} input, {args.frames} frames, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}, {time.strftime('%Y-%m-%d %H:%M')}\n",
        f"Command: `{' '.join(['.venv/bin/python', *sys.argv])}`\n",
        "| model | setting | s/frame | vs a (stock) | vs b (Exact) | GDA | window attn | flow | rest |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    measured = measure(args.models.split(","), keys, w, h, args.frames, args.reps)
    for kind, res in measured.items():
        for key in keys:
            r = res[key]
            ratio = {k: res[k]["attn"] / r["attn"] for k in ("d", "f") if k in res and r.get("attn")}
            if key == "e" and ratio:
                notes.append(
                    f"{kind}: window attention alone, e vs " + ", ".join(f"{k}: {v:.2f}x" for k, v in ratio.items())
                )
            label = SETTINGS[key][0]
            sa = f"{res['a']['total'] / r['total']:.2f}x" if "a" in res else "-"
            sb = f"{res['b']['total'] / r['total']:.2f}x" if "b" in res else "-"
            share = [f"{100 * r.get(k, 0.0) / r['total']:.0f}%" for k in ("gda", "attn", "flow", "rest")]
            lines.append(
                f"| {kind} | {key}: {label} | {r['total'] / args.frames:.2f} | {sa} | {sb} | "
                + " | ".join(share)
                + " |"
            )
        if "d" in res and "e" in res:
            notes.append(
                f"{kind}: PnP-Nystra vs Exact at [2,64,64] (e vs d): {res['d']['total'] / res['e']['total']:.2f}x"
            )
        if "f" in res and "e" in res:
            notes.append(
                f"{kind}: PnP-Nystra vs Naive at [2,64,64] (e vs f): {res['f']['total'] / res['e']['total']:.2f}x"
            )
        if "a" in res and "e" in res:
            notes.append(
                f"{kind}: PnP-Nystra [2,64,64] vs the stock model (e vs a): "
                f"{res['a']['total'] / res['e']['total']:.2f}x"
            )
    text = "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
