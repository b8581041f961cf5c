"""Per-layer truth of PnP-Nystra on the trained third-party models, and a per-layer plan under a quality budget.

    .venv/bin/python benchmarks/nystra_layers.py --ngswin-src /work/upstream/NGramSwin \
        --eswt-src /work/upstream/FriedRiceLab [--crops 4] [--specs m16i6,m16i2,m32i6] [--plan m16i6 --budget 0.3]

Calibration data: --crops centre crops (HR --side, default 192) of training images (../shared/data/train/Urban100,
img_001 on; never evaluation data), degraded as the evaluation LR files are (MATLAB bicubic, 8-bit rounding after
each pass).

Step 1, diagnostics per attention layer (one forward with exact attention, every call of the layer recorded; ESWT
makes two calls per layer, one per stripe orientation): largest logit, mean self-attention weight (diagonal of the
softmax), median condition number of the landmark kernel G_A = exp(P_q Λ P_kᵀ) (Λ = logits + bias, no mask; fp64),
median σ_{m+1}/σ_1 of the exact kernel exp(Λ) (the best any rank-m approximation can do), the guard's firing rate
(rows the guard recomputes exactly: denominator not positive, output out of range or NaN), the sampled-row error of
PnPNystra.max_error and the centred relative error of the layer's output (per head: the worst head). Step 2, the
output truth: for each layer alone with PnP-Nystra (exact everywhere else), the drop in mean Y-PSNR against HR, per
spec. Step 3 (--plan): plan_under_budget over step 2's drops with the joint drop measured on the same crops; the
plan is written to benchmarks/results/plans/ and can be evaluated with nystra_frontier.py (setting plan=FILE).
Specs are m<landmarks>i<iterations> as in nystra_frontier.py. Results are appended to
benchmarks/results/third_party.md unless --no-write.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nystra_frontier as nf
import third_party as tp

from vsnystra.attention import Exact, PnPNystra, attention
from vsnystra.attention.check import sampled_error
from vsnystra.attention.grid import landmark_grid, segment_matrix, token_grid
from vsnystra.attention.plan import LayerPlan, plan_under_budget
from vsnystra.training.degrade import imresize
from vsnystra.training.metrics import psnr

TRAIN = tp.ROOT.parent / "shared" / "data" / "train" / "Urban100"
PLANS = tp.ROOT / "benchmarks" / "results" / "plans"


def calibration_crops(scale: int, count: int, side: int = 192) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(LR, HR) centre crops of the first ``count`` training images, LR by MATLAB bicubic with 8-bit rounding."""
    out = []
    for path in sorted(TRAIN.glob("img_*.png"))[:count]:
        img = tp.read(path)
        top, left = (img.shape[1] - side) // 2, (img.shape[2] - side) // 2
        hr = img[:, top : top + side, left : left + side]
        out.append((imresize(hr, 1 / scale, uint8=True), hr))
    return out


@dataclass
class Call:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    bias: torch.Tensor | None
    mask: torch.Tensor | None
    window: tuple[int, ...] | None


@dataclass
class Recorder:
    """Stands in for the seam inside the adapters: records every call of the current layer, runs Exact."""

    calls: dict[int, list[Call]] = field(default_factory=dict)
    layer: int = -1

    def __call__(self, q: Any, k: Any, v: Any, *, scale: float, bias: Any = None, mask: Any = None, **kw: Any) -> Any:
        self.calls.setdefault(self.layer, []).append(Call(q * scale, k, v, bias, mask, kw.get("window")))
        return attention(q, k, v, scale=scale, bias=bias, mask=mask, spec=Exact())


@contextlib.contextmanager
def recording(arch: tp.Arch, rec: Recorder) -> Iterator[None]:
    """Route every layer through ``rec`` (the adapters call third_party.attention), restored afterwards."""
    mods = [m for m in arch.model.modules() if isinstance(m, arch.attn_cls)]
    saved = tp.attention
    tp.attention = rec  # type: ignore[assignment]
    handles = [
        mod.register_forward_pre_hook(lambda _m, _a, i=i: setattr(rec, "layer", i), prepend=True)
        for i, mod in enumerate(mods)
    ]
    try:
        nf.route_plan(arch.model, arch.attn_cls, arch.forward, LayerPlan((Exact(),) * len(mods)))
        yield
    finally:
        tp.attention = saved
        for h in handles:
            h.remove()


def diagnostics(calls: list[Call], spec: PnPNystra) -> dict[str, float]:
    """Step 1 numbers of one layer (module docstring), over its recorded calls on all crops."""
    stats: dict[str, list[float]] = {k: [] for k in ("logit", "self", "cond", "tail", "guard", "sample", "err", "head")}
    for c in calls:
        n = c.q.shape[2]
        if spec.landmarks >= n:
            continue
        lam = (c.q @ c.k.transpose(-2, -1)).double()
        if c.bias is not None:
            lam = lam + c.bias.double().unsqueeze(0)
        full = lam if c.mask is None else lam.view(-1, c.mask.shape[0], *lam.shape[1:]) + c.mask.double()[:, None]
        full = full.reshape(lam.shape)
        p = full.softmax(-1)
        stats["logit"].append(float(lam.max()))
        stats["self"].append(float(p.diagonal(dim1=-2, dim2=-1).mean()))
        grid = token_grid(n, c.window)
        seg = segment_matrix(grid, landmark_grid(grid, spec.landmarks)).double()
        seg = seg / seg.sum(-1, keepdim=True)
        ga = seg @ lam[:64] @ seg.t()
        ga = torch.exp(ga - ga.amax(dim=(-2, -1), keepdim=True))
        stats["cond"].append(float(torch.linalg.cond(ga).median()))
        g = torch.exp(lam[:64] - lam[:64].amax(dim=(-2, -1), keepdim=True))
        sv = torch.linalg.svdvals(g)
        stats["tail"].append(float((sv[..., spec.landmarks] / sv[..., 0]).median()))
        kw: dict[str, Any] = {"scale": 1.0, "bias": c.bias, "mask": c.mask, "window": c.window}
        raw = attention(c.q, c.k, c.v, spec=PnPNystra(spec.landmarks, spec.iters, None, "matrix", guard=False), **kw)
        out = attention(c.q, c.k, c.v, spec=spec, **kw)
        # rows the guard recomputed (denominator <= 0, out of range or NaN): exactly where the two outputs differ
        stats["guard"].append(float((out != raw).any(-1).double().mean()))
        exact = p.to(c.v.dtype) @ c.v
        stats["sample"].append(sampled_error(out, c.q, c.k, c.v, scale=1.0, bias=c.bias, mask=c.mask))
        centred = exact - c.v.mean(dim=2, keepdim=True)
        per_head = (out - exact).pow(2).sum(dim=(0, 2, 3)).sqrt() / centred.pow(2).sum(dim=(0, 2, 3)).sqrt()
        stats["err"].append(float((out - exact).norm() / centred.norm()))
        stats["head"].append(float(per_head.max()))
    agg = {"logit": max, "self": _mean, "cond": _median, "tail": _median, "guard": _mean}
    res = {k: float(agg.get(k, max)(v)) if v else math.nan for k, v in stats.items()}
    return res


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def mean_psnr(arch: tp.Arch, crops: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    vals = []
    for lr, hr in crops:
        with torch.no_grad():
            out = arch.run(lr.unsqueeze(0))[0]
        vals.append(psnr(out, hr, arch.scale, y_channel=True))
    return sum(vals) / len(vals)


def plan_psnr(arch: tp.Arch, plan: LayerPlan, crops: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    nf.route_plan(arch.model, arch.attn_cls, arch.forward, plan)
    return mean_psnr(arch, crops)


def study(arch: tp.Arch, crops: list[tuple[torch.Tensor, torch.Tensor]], args: argparse.Namespace) -> list[str]:
    names = [name for name, m in arch.model.named_modules() if isinstance(m, arch.attn_cls)]
    specs = {s: nf.parse_setting(s, 1)[1].specs[0] for s in args.specs.split(",")}
    first = next(iter(specs.values()))
    assert isinstance(first, PnPNystra)
    rec = Recorder()
    with recording(arch, rec), torch.no_grad():
        for lr, _ in crops:
            arch.run(lr.unsqueeze(0))
    active = [i for i in range(len(names)) if i in rec.calls and rec.calls[i][0].q.shape[2] > first.landmarks]
    exact_db = plan_psnr(arch, LayerPlan((Exact(),) * len(names)), crops)
    if args.diagnostics_only:
        specs = {}
    drops: dict[str, dict[int, float]] = {s: {} for s in specs}
    for s, spec in specs.items():
        for i in active:
            plan = LayerPlan(tuple(spec if j == i else Exact() for j in range(len(names))))
            drops[s][i] = exact_db - plan_psnr(arch, plan, crops)
        print(f"{arch.name}: per-layer drops {s} done", flush=True)
    lines = [
        "",
        f"#### {arch.name}: per layer, {len(crops)} training crops (exact {exact_db:.2f} dB mean Y-PSNR); "
        f"diagnostics with {args.specs.split(',')[0]}",
        "",
        "| layer | module | tokens | max logit | self weight | cond G_A | σ_m+1/σ_1 | guard rate | sampled err "
        "| output err (worst head) | " + " | ".join(f"drop {s} (dB)" for s in specs) + " |",
        "|---" * (10 + len(specs)) + "|",
    ]
    for i in active:
        d = diagnostics(rec.calls[i], first)
        n = rec.calls[i][0].q.shape[2]
        win = "/".join("x".join(map(str, c.window)) for c in rec.calls[i][:2] if c.window) or str(n)
        lines.append(
            f"| {i} | {names[i]} | {win} | {d['logit']:.1f} | {d['self']:.3f} | {d['cond']:.1e} | {d['tail']:.1e} | "
            f"{d['guard']:.4f} | {d['sample']:.2f} | {d['err']:.2f} ({d['head']:.2f}) | "
            + " | ".join(f"{drops[s][i]:.3f}" for s in specs)
            + " |"
        )
    print("\n".join(lines), flush=True)
    if args.plan and not args.diagnostics_only:
        spec = specs[args.plan]
        assert isinstance(spec, PnPNystra)
        layer_drops = [drops[args.plan].get(i, math.inf) for i in range(len(names))]
        plan = plan_under_budget(layer_drops, args.budget, spec, joint=lambda p: exact_db - plan_psnr(arch, p, crops))
        joint = exact_db - plan_psnr(arch, plan, crops)
        PLANS.mkdir(parents=True, exist_ok=True)
        slug = arch.name.split()[0].lower() + (f"_w{args.eswt_wide}" if arch.wide and args.eswt_wide > 1 else "")
        path = PLANS / f"{slug}_{args.plan}_{args.budget:g}dB.json"
        path.write_text(json.dumps(plan.to_json(), indent=1) + "\n")
        lines += [
            "",
            f"Plan ({args.plan}, budget {args.budget} dB on these crops): PnP-Nystra on layers "
            f"{list(plan.nystrom_layers)} of {len(active)} that can run it; joint drop {joint:.3f} dB; "
            f"`{path.relative_to(tp.ROOT)}`.",
        ]
        print(lines[-1], flush=True)
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ngswin-src", type=Path)
    ap.add_argument("--eswt-src", type=Path)
    ap.add_argument("--weights", type=Path, default=tp.WEIGHTS)
    ap.add_argument("--crops", type=int, default=4)
    ap.add_argument("--side", type=int, default=192, help="HR crop side (ESWT's wide stripes need LR >= a stripe)")
    ap.add_argument("--specs", default="m16i6,m16i2,m32i6", help="PnP-Nystra settings; the first one diagnoses")
    ap.add_argument("--diagnostics-only", action="store_true", help="step 1 only (no per-layer drops, no plan)")
    ap.add_argument("--plan", default="", help="spec (one of --specs) for a per-layer plan")
    ap.add_argument("--budget", type=float, default=0.3, help="plan's quality budget, dB on the crops")
    ap.add_argument("--eswt-wide", type=int, default=1, help="ESWT stripes this many times the trained ones")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if not args.ngswin_src and not args.eswt_src:
        ap.error("pass --ngswin-src and/or --eswt-src")
    if args.plan and args.plan not in args.specs.split(","):
        ap.error("--plan must be one of --specs")
    torch.set_num_threads(args.threads)
    lines = [
        "",
        f"### {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `benchmarks/nystra_layers.py "
        f"{shlex.join(sys.argv[1:])}`",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), fp32. Layers that never run Nyström "
        "(tokens <= landmarks, NGswin's 2x2 N-gram windows) are left out. drop = exact mean Y-PSNR - mean Y-PSNR "
        "with only that layer on PnP-Nystra (per-window pinv scaling, guard on), on the training crops.",
    ]
    builders: list[tuple[Path | None, Any]] = [(args.ngswin_src, tp.build_ngswin), (args.eswt_src, tp.build_eswt)]
    for src, build in builders:
        if src:
            arch = build(src, args.weights)
            if arch.wide and args.eswt_wide > 1:
                tp.eswt_windows(arch.model, arch.attn_cls, args.eswt_wide)
                arch.name += f" (stripes x{args.eswt_wide})"
            lines += study(arch, calibration_crops(arch.scale, args.crops, args.side), args)
    if not args.no_write:
        with tp.RESULTS.open("a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
