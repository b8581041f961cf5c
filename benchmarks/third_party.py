"""What PnP-Nystra costs on genuinely trained window attention: third-party NGswin x2 and ESWT x4 checkpoints.

    .venv/bin/python benchmarks/third_party.py --ngswin-src /path/to/NGramSwin --eswt-src /path/to/FriedRiceLab \
        [--datasets Set5,Set14] [--limit N] [--modes upstream,exact,nystra,nystra-batch,wide-exact,wide-nystra]

Why: the bundled SwinIR/Uformer/RVRT models are small and self-trained; the official checkpoints are not available
offline. NGswin (github rami0205/NGramSwin, x2 lightweight SR, Set5 x2 Y-PSNR 38.05 published) and ESWT (github
Fried-Rice-Lab/FriedRiceLab, ESWT-24-6 x4 lightweight SR, Set5 32.46 / Set14 28.80 published for the (24, 6) window)
are the only published, trained window-attention checkpoints at hand (../shared/weights/third_party, SOURCES.txt).
Their attention maps are the real thing, so they measure what a training-free swap to PnP-Nystra costs.

How: the architectures are not part of vsnystra and are never copied here (licences). Pass a local checkout of each
upstream repository (or any file or folder inside it); the script imports the upstream model class from there,
builds it with the checkpoint's hyper-parameters, loads the checkpoint (NGswin: as upstream's own test does, every
stored tensor must match and only the derived relative_position_index / attn_mask buffers may be absent; ESWT:
strict) and then routes each window attention through ``vsnystra.attention.attention`` by replacing the upstream
attention module's forward on the instance (adapters below; ``upstream`` restores the original forward). The
upstream code needs timm and einops (NGswin also torchvision); basicsr is stubbed when absent (ESWT only
decorates its class with basicsr's registry) and timm's renamed efficientnet_builder is aliased.

- NGswin ``WindowAttention`` (SwinV2 cosine attention with a learned logit_scale, 8x8 windows, 0/-100 shift mask):
  q and k are L2-normalised, the clamped exp(logit_scale) is folded into q, scale=1, the gathered relative-position
  bias is passed as ``bias`` and the shift mask as ``mask``. The N-gram context attention uses the same module on
  2x2 windows; with 4 tokens <= landmarks it runs exact under every spec.
- ESWT ``SABase4D`` (striped windows (24, 6) and (6, 24) over two channel halves, 1 head, q = k, no scale, bias or
  mask; shifted blocks roll without a mask): ``attention(q, q, v, scale=1, window=(24, 6))`` per stripe.

Step 1 checks that the adapters with Exact() reproduce the unpatched upstream output (max |diff| on a crop, and the
``max |Δ| vs upstream`` column over every evaluated image). Step 2 gives Y-channel PSNR/SSIM (border crop = scale,
outputs clamped and rounded to 8 bits, vsnystra.training.metrics) on Set5/Set14 with their MATLAB-bicubic LR files,
following each repository's test procedure (NGswin: LR symmetric-padded to a multiple of 4x the window, [0, 1]
input; ESWT: [0, 255] input, padding inside the model). Modes: ``upstream`` (unpatched), ``exact`` (seam, Exact),
``nystra`` / ``nystra-batch`` (PnP-Nystra at the trained window with bias and mask kept, per-matrix or the paper's
batch-global pseudo-inverse scaling), ``nystra-noguard`` (per-matrix, without the exact recompute of broken-down rows:
a diagnostic), and for ESWT only ``wide-exact`` / ``wide-nystra`` (stripes and shifts enlarged --wide-factor times, an
untrained geometry; ESWT has no bias or mask tied to the window). NGswin's window is fixed by its bias table, mask
and N-gram partition, so it has no wide mode. Results are appended to benchmarks/results/third_party.md.
The CPU is assumed shared: one thread by default (--threads); use --limit for short runs.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import math
import platform
import shlex
import sys
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vsnystra.attention import AttentionSpec, Exact, PnPNystra, attention  # noqa: E402
from vsnystra.training.metrics import psnr, ssim  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "images"
WEIGHTS = ROOT.parent / "shared" / "weights" / "third_party"
RESULTS = ROOT / "benchmarks" / "results" / "third_party.md"

# NGswin x2: the defaults of upstream's dp_test_main.py / NGswin.__init__ (the released light_x2 model).
NGSWIN_KW: dict[str, Any] = {
    "training_img_size": 64,
    "ngrams": (2, 2, 2, 2),
    "in_chans": 3,
    "embed_dim": 64,
    "depths": (6, 4, 4),
    "num_heads": (6, 4, 4),
    "dec_dim": 64,
    "dec_depths": 6,
    "dec_num_heads": 6,
    "target_mode": "light_x2",
    "window_size": 8,
    "mlp_ratio": 2.0,
    "qkv_bias": True,
    "img_norm": True,
}
# ESWT-24-6 x4: network_g of options/repr/ESWT/ESWT-24-6_LSR.yml with options/task/LSR_x4.yml.
ESWT_WINDOWS = ((24, 6), (6, 24))
ESWT_SHIFTS = ((12, 3), (3, 12))
ESWT_KW: dict[str, Any] = {
    "upscale": 4,
    "num_in_ch": 3,
    "num_out_ch": 3,
    "task": "lsr",
    "n_t": 6,
    "n_g": 3,
    "dim": 60,
    "num_heads": 1,
    "window_list": ESWT_WINDOWS,
    "shift_list": ESWT_SHIFTS,
}
MODES = ("upstream", "exact", "nystra", "nystra-batch", "nystra-noguard", "wide-exact", "wide-nystra")


# ---------------------------------------------------------------------------------------------------------------
# Importing the upstream code from a local checkout


def find_root(src: Path, marker: str) -> Path:
    """The checkout holding ``marker``: src itself or the closest folder above it (src may be a file inside)."""
    src = src.resolve()
    for cand in (src, *src.parents):
        if (cand / marker).is_file():
            return cand
    raise SystemExit(f"third_party.py: no {marker} in {src} or above; pass a checkout of the upstream repository")


def alias_module(old: str, new: str) -> None:
    """Make ``import old`` resolve to ``new`` when the installed library renamed it."""
    try:
        importlib.import_module(old)
    except ModuleNotFoundError:
        sys.modules[old] = importlib.import_module(new)


def import_ngswin(src: Path) -> tuple[type[nn.Module], type[nn.Module]]:
    """NGswin and its WindowAttention from a NGramSwin checkout."""
    root = find_root(src, "my_model/ngswin_model/ngswin.py")
    # ngswin.py imports (unused) timm.models.efficientnet_builder, renamed _efficientnet_builder in timm 0.9.
    alias_module("timm.models.efficientnet_builder", "timm.models._efficientnet_builder")
    sys.path.insert(0, str(root))  # the package imports `utils.etc_utils` from the checkout's root
    ngswin = importlib.import_module("my_model.ngswin_model.ngswin")
    win_attention = importlib.import_module("my_model.ngswin_model.win_attention")
    return ngswin.NGswin, win_attention.WindowAttention


class _Registry:
    """Stands in for basicsr's ARCH_REGISTRY: eswt_arch.py only decorates its class with ``register()``."""

    def register(self) -> Callable[[type], type]:
        return lambda cls: cls


def import_eswt(src: Path) -> tuple[type[nn.Module], type[nn.Module]]:
    """ESWT and SABase4D from a FriedRiceLab checkout, without basicsr or the lab's other architectures."""
    root = find_root(src, "archs/eswt_arch.py")
    # archs/__init__.py imports every architecture of the lab through basicsr; bind the package to its folder
    # without running it, so only eswt_arch.py and archs/utils are imported.
    pkg = types.ModuleType("archs")
    pkg.__path__ = [str(root / "archs")]
    sys.modules["archs"] = pkg
    if importlib.util.find_spec("basicsr") is None:
        registry = types.ModuleType("basicsr.utils.registry")
        registry.ARCH_REGISTRY = _Registry()  # type: ignore[attr-defined]
        for name in ("basicsr", "basicsr.utils"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["basicsr.utils.registry"] = registry
    eswt = importlib.import_module("archs.eswt_arch")
    attn = importlib.import_module("archs.utils._attention")
    return eswt.ESWT, attn.SABase4D


def load_checkpoint(model: nn.Module, path: Path, derived: tuple[str, ...] = ()) -> None:
    """Load ``path`` (a flat state dict or BasicSR's {'params': ...}); every stored tensor must fit the model.

    Missing keys are allowed only for buffers named in ``derived`` (recomputed by the constructor).
    """
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd = sd.get("params", sd)
    res = model.load_state_dict(sd, strict=False)
    missing = [k for k in res.missing_keys if k.rsplit(".", 1)[-1] not in derived]
    if res.unexpected_keys or missing:
        raise SystemExit(
            f"third_party.py: {path.name} does not fit the model: unexpected {res.unexpected_keys[:5]}, "
            f"missing {missing[:5]}"
        )


# ---------------------------------------------------------------------------------------------------------------
# Adapters: the upstream attention modules' forward with the attention itself through the vsnystra seam


def ngswin_forward(
    self: nn.Module, spec: AttentionSpec, x: torch.Tensor, mask: torch.Tensor | None = None, *, terms: bool = True
) -> Any:
    """NGswin WindowAttention.forward: scaled cosine attention + relative-position bias + 0/-100 shift mask
    (``terms=False`` drops both, as the research code does; the cyclic shift stays)."""
    b_, n, _ = x.shape
    qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    logit_scale = torch.clamp(self.logit_scale, max=math.log(1.0 / 0.01)).exp()  # (nH, 1, 1), as upstream
    q = F.normalize(q, dim=-1) * logit_scale
    k = F.normalize(k, dim=-1)
    bias = self._get_rel_pos_bias()[0] if terms else None  # (nH, N, N)
    mask = mask if terms else None
    out = attention(q, k, v, scale=1.0, bias=bias, mask=mask, spec=spec, window=tuple(self.window_size))
    return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b_, n, -1)))


def eswt_forward(self: nn.Module, spec: AttentionSpec, x: torch.Tensor) -> Any:
    """ESWT SABase4D.forward: per channel group, striped windows, softmax(q·qᵀ)·v (no scale, bias or mask)."""
    qkv = self.attn(x)
    c = qkv.shape[1]
    groups = torch.split(qkv, [c // len(self.window_list)] * len(self.window_list), dim=1)
    outs = []
    for part, win, shift in zip(groups, self.window_list, self.shift_list, strict=True):
        (wh, ww), sh = tuple(win), tuple(shift)
        h, w = part.shape[-2:]
        part = self.check_image_size(part, (wh, ww))  # reflect padding to whole windows, as upstream
        if sh != (0, 0):
            part = torch.roll(part, shifts=sh, dims=(2, 3))
        b, ch, hp, wp = part.shape
        nh, nw, heads = hp // wh, wp // ww, self.num_heads
        # "b (qv head c) (nh ws1) (nw ws2) -> qv (b nh nw) head (ws1 ws2) c"
        qv = part.view(b, 2, heads, ch // (2 * heads), nh, wh, nw, ww).permute(1, 0, 4, 6, 2, 5, 7, 3)
        qv = qv.reshape(2, b * nh * nw, heads, wh * ww, ch // (2 * heads))
        out = attention(qv[0], qv[0], qv[1], scale=1.0, spec=spec, window=(wh, ww))
        # "(b nh nw) head (ws1 ws2) c -> b (head c) (nh ws1) (nw ws2)"
        out = out.view(b, nh, nw, heads, wh, ww, -1).permute(0, 3, 6, 1, 4, 2, 5).reshape(b, -1, hp, wp)
        if sh != (0, 0):
            out = torch.roll(out, shifts=(-sh[0], -sh[1]), dims=(2, 3))
        outs.append(out[:, :, :h, :w])
    return self.proj(torch.cat(outs, dim=1))


def route(model: nn.Module, cls: type[nn.Module], forward: Callable[..., Any], spec: AttentionSpec | None) -> int:
    """Send every ``cls`` module of ``model`` through the seam with ``spec``; None restores upstream's forward."""
    count = 0
    for mod in model.modules():
        if isinstance(mod, cls):
            if spec is None:
                mod.__dict__.pop("forward", None)
            else:
                mod.forward = functools.partial(forward, mod, spec)
            count += 1
    return count


def eswt_windows(model: nn.Module, cls: type[nn.Module], factor: int) -> None:
    """Set ESWT's stripes and shifts to ``factor`` times the trained ones (1 restores them)."""
    for mod in model.modules():
        if isinstance(mod, cls):
            shifted = any(tuple(s) != (0, 0) for s in mod.shift_list)
            mod.window_list = tuple((a * factor, b * factor) for a, b in ESWT_WINDOWS)
            mod.shift_list = (
                tuple((a * factor, b * factor) for a, b in ESWT_SHIFTS) if shifted else ((0, 0),) * len(ESWT_WINDOWS)
            )


# ---------------------------------------------------------------------------------------------------------------
# Models and data


@dataclass
class Arch:
    name: str
    scale: int
    model: nn.Module
    attn_cls: type[nn.Module]
    forward: Callable[..., Any]
    run: Callable[[torch.Tensor], torch.Tensor]  # (1, 3, h, w) LR in [0, 1] -> SR in [0, 1]
    wide: bool  # whether the enlarged-window modes apply


def pad_symmetric(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Bottom/right symmetric padding to a multiple (torchvision's 'symmetric' mode, as NGswin's test does)."""
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if pw:
        x = torch.cat([x, x[..., w - pw :].flip(-1)], dim=-1)
    if ph:
        x = torch.cat([x, x[..., h - ph :, :].flip(-2)], dim=-2)
    return x


def build_ngswin(src: Path, weights: Path) -> Arch:
    cls, attn_cls = import_ngswin(src)
    model = cls(**NGSWIN_KW).eval()
    load_checkpoint(model, weights / "NGswin_x2.pth", derived=("relative_position_index", "attn_mask"))
    unit = 4 * NGSWIN_KW["window_size"]

    def run(lr: torch.Tensor) -> torch.Tensor:
        h, w = lr.shape[-2:]
        return model(pad_symmetric(lr, unit))[..., : 2 * h, : 2 * w]

    return Arch("NGswin x2", 2, model, attn_cls, ngswin_forward, run, wide=False)


def build_eswt(src: Path, weights: Path) -> Arch:
    cls, attn_cls = import_eswt(src)
    model = cls(**ESWT_KW).eval()
    load_checkpoint(model, weights / "ESWT-24-6_LSR_x4.pth")

    def run(lr: torch.Tensor) -> torch.Tensor:
        return model(lr * 255.0) / 255.0  # BasicSR 'bit: 8' data: pixel values in [0, 255]

    return Arch("ESWT-24-6 x4", 4, model, attn_cls, eswt_forward, run, wide=True)


def read(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float() / 255.0


def sr_cases(ds: str, scale: int, limit: int) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, LR (3, h, w), HR cropped to (3, scale·h, scale·w)) of a dataset, MATLAB-bicubic LR files."""
    for hr_path in sorted((DATA / ds / "HR").glob("*.png"))[: limit or None]:
        lr = read(DATA / ds / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png")
        hr = read(hr_path)[:, : lr.shape[1] * scale, : lr.shape[2] * scale]
        yield hr_path.stem, lr, hr


def configure(arch: Arch, mode: str, specs: dict[str, AttentionSpec], wide_factor: int) -> None:
    if arch.wide:
        eswt_windows(arch.model, arch.attn_cls, wide_factor if mode.startswith("wide-") else 1)
    route(arch.model, arch.attn_cls, arch.forward, None if mode == "upstream" else specs[mode])


def adapter_check(arch: Arch, lr: torch.Tensor, side: int = 64) -> float:
    """Step 1: max |upstream - adapter with Exact()| on a centre crop."""
    h, w = lr.shape[-2:]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    x = lr[:, top : top + side, left : left + side].unsqueeze(0)
    with torch.no_grad():
        if arch.wide:
            eswt_windows(arch.model, arch.attn_cls, 1)
        route(arch.model, arch.attn_cls, arch.forward, None)
        ref = arch.run(x)
        n = route(arch.model, arch.attn_cls, arch.forward, Exact())
        out = arch.run(x)
    diff = float((ref - out).abs().max())
    print(
        f"step 1: {arch.name}: {n} attention modules routed; Exact adapter vs upstream on a {x.shape[-2]}x"
        f"{x.shape[-1]} LR crop: max |diff| = {diff:.2e}",
        flush=True,
    )
    return diff


Row = tuple[str, str, str, float, float, float | None, float]  # model, data, mode, psnr_y, ssim_y, max |Δ|, s


def evaluate(arch: Arch, ds: str, mode: str, limit: int, refs: dict[str, torch.Tensor]) -> Row:
    """Mean Y-PSNR/SSIM of ``arch`` in its current configuration; upstream outputs are kept in ``refs``."""
    scores: list[tuple[float, float]] = []
    delta = 0.0
    t0 = time.perf_counter()
    for name, lr, hr in sr_cases(ds, arch.scale, limit):
        with torch.no_grad():
            out = arch.run(lr.unsqueeze(0))[0]
        if mode == "upstream":
            refs[name] = out
        elif name in refs:
            d = float((out - refs[name]).abs().max())
            delta = d if math.isnan(d) or d > delta else delta  # a NaN output stays visible
        s = arch.scale
        scores.append((psnr(out, hr, s, y_channel=True), ssim(out, hr, s, y_channel=True)))
    secs = time.perf_counter() - t0
    p, q = np.mean(scores, axis=0)
    d = None if mode == "upstream" or not refs else delta
    return arch.name, f"{ds} x{arch.scale}", mode, float(p), float(q), d, secs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ngswin-src", type=Path, help="checkout of github.com/rami0205/NGramSwin (or a path inside)")
    ap.add_argument("--eswt-src", type=Path, help="checkout of github.com/Fried-Rice-Lab/FriedRiceLab (or inside)")
    ap.add_argument("--weights", type=Path, default=WEIGHTS, help="folder holding the two .pth files")
    ap.add_argument("--datasets", default="Set5,Set14")
    ap.add_argument("--limit", type=int, default=0, help="images per dataset (0 = all)")
    ap.add_argument("--modes", default="upstream,exact,nystra,nystra-batch,wide-exact,wide-nystra")
    ap.add_argument("--landmarks", type=int, default=16, help="PnP-Nystra landmarks at the trained window")
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--threshold", type=float, default=None)
    ap.add_argument("--wide-factor", type=int, default=2, help="ESWT wide modes: stripes and shifts times this")
    ap.add_argument("--wide-landmarks", type=int, default=32, help="landmarks of wide-nystra")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the CPU is usually shared)")
    ap.add_argument("--no-write", action="store_true", help="print only, do not append to the results file")
    args = ap.parse_args()
    if not args.ngswin_src and not args.eswt_src:
        ap.error("pass --ngswin-src and/or --eswt-src (local checkouts of the upstream repositories)")
    modes = args.modes.split(",")
    if unknown := [m for m in modes if m not in MODES]:
        ap.error(f"unknown mode(s) {unknown}; use {', '.join(MODES)}")
    torch.set_num_threads(args.threads)
    pnp = functools.partial(PnPNystra, iters=args.iters, threshold=args.threshold)
    specs: dict[str, AttentionSpec] = {
        "exact": Exact(),
        "nystra": pnp(landmarks=args.landmarks, pinv_init="matrix"),
        "nystra-batch": pnp(landmarks=args.landmarks, pinv_init="batch"),
        "nystra-noguard": pnp(landmarks=args.landmarks, pinv_init="matrix", guard=False),
        "wide-exact": Exact(),
        "wide-nystra": pnp(landmarks=args.wide_landmarks, pinv_init="matrix"),
    }
    archs: list[Arch] = []
    if args.ngswin_src:
        archs.append(build_ngswin(args.ngswin_src, args.weights))
    if args.eswt_src:
        archs.append(build_eswt(args.eswt_src, args.weights))

    datasets = args.datasets.split(",")
    checks: list[str] = []
    for arch in archs:
        _, lr, _ = next(sr_cases(datasets[0], arch.scale, 1))
        diff = adapter_check(arch, lr)
        checks.append(f"{arch.name} {diff:.2e}")
        if diff > 1e-3:
            raise SystemExit(f"third_party.py: the {arch.name} adapter does not reproduce upstream (max |diff| {diff})")

    rows: list[Row] = []
    for arch in archs:
        for ds in datasets:
            refs: dict[str, torch.Tensor] = {}
            for mode in modes:
                if mode.startswith("wide-") and not arch.wide:
                    continue
                configure(arch, mode, specs, args.wide_factor)
                rows.append(evaluate(arch, ds, mode, args.limit, refs))
                r = rows[-1]
                d = "-" if r[5] is None else f"{r[5]:.2e}"
                print(f"{r[0]:14s} {r[1]:10s} {r[2]:15s} {r[3]:.2f} {r[4]:.4f} {d} {r[6]:.0f}s", flush=True)
        configure(arch, "upstream", specs, 1)

    wide = tuple((a * args.wide_factor, b * args.wide_factor) for a, b in ESWT_WINDOWS)
    lines = [
        "",
        f"### {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `benchmarks/third_party.py "
        f"{shlex.join(sys.argv[1:])}`",
        "",
        f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
        f"thread(s), fp32. Limit: {args.limit or 'all'} images/dataset. Y-channel PSNR/SSIM, border crop = scale, "
        "outputs clamped and rounded to 8 bits, MATLAB-bicubic LR files. nystra = "
        f"{specs['nystra']}, nystra-batch = {specs['nystra-batch']}, nystra-noguard = {specs['nystra-noguard']}, at "
        f"the trained window with bias and mask kept; ESWT wide-* = stripes {wide}, wide-nystra = "
        f"{specs['wide-nystra']}. Step 1, Exact adapter vs upstream (max |diff|, LR centre crop): "
        f"{', '.join(checks)}. Published: NGswin x2 Set5 38.05; ESWT (24, 6) x4 Set5 32.46 / 0.8979, "
        "Set14 28.80 / 0.7866. Upstream sources: "
        + ", ".join(f"`{p}`" for p in (args.ngswin_src, args.eswt_src) if p)
        + ".",
        "",
        "| model | data | attention | PSNR Y | SSIM Y | max abs Δ vs upstream | time (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = "-" if r[5] is None else f"{r[5]:.2e}"
        lines.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.2f} | {r[4]:.4f} | {d} | {r[6]:.0f} |")
    print("\n".join(lines), flush=True)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS.open("a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
