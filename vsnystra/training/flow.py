"""Train RVRT's SpyNet on layered still scenes (flow_data) and put it into an RVRT checkpoint.

The bundled RVRT denoiser was trained with SpyNet frozen at zero flow, so its propagation could only ever pair a
pixel with whatever sat at the same place in the neighbouring frame: on moving footage the aligned past is wrong
and the model learned to read little of it. This trains SpyNet alone, supervised at every pyramid level on pairs
with exact flow, at the scale the denoisers use (noisy frames shrunk 4x). It is checked on real motion it was not
trained on (DAVIS training sequences) by how well the predicted flow aligns clean frames, against zero flow.

    python -m vsnystra.training.flow --stills ../shared/data/train/stills ../shared/data/train/Urban100 \\
        --run runs/spynet --steps 3000 --init models/rvrt-denoise-small.pth
    python -m vsnystra.training.flow --run runs/spynet --evaluate ../shared/data/train/DAVIS2016_480p
    python -m vsnystra.training.flow --run runs/spynet --install models/rvrt-denoise-small.pth -o OUT.pth
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vsnystra.archs.spynet import SpyNet, flow_warp
from vsnystra.training.data import collect_images, collect_sequences, read_image
from vsnystra.training.flow_data import FlowPairs
from vsnystra.training.loop import lr_factor

log = logging.getLogger("vsnystra.training.flow")

LEVEL_WEIGHTS = (0.05, 0.1, 0.2, 0.4, 0.7, 1.0)  # coarse to fine


def load_spynet(path: Path | None) -> SpyNet:
    """SpyNet from an RVRT checkpoint's ``spynet.*`` tensors, or a fresh one that predicts zero flow."""
    net = SpyNet()
    if path is None:
        # He initialisation keeps the hidden features at the input's scale (PyTorch's default shrinks them ~2x per
        # layer, which left the flow head without signal); a near-zero head starts every level at "no correction"
        convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
        for i, conv in enumerate(convs):
            head = i % 5 == 4  # five convolutions per level, the last one predicts the flow correction
            if head:  # small, not zero: a zero head passes no gradient to the layers that must learn to match
                torch.nn.init.normal_(conv.weight, std=1e-3)
            else:
                torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            if conv.bias is not None:
                torch.nn.init.zeros_(conv.bias)
        return net
    blob = torch.load(path, map_location="cpu", weights_only=True)
    sd = blob.get("params", blob)
    sub = {k[len("spynet.") :]: v.float() for k, v in sd.items() if k.startswith("spynet.")}
    net.load_state_dict(sub, strict=True)
    return net


def level_loss(flows: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Weighted end-point error of every level's flow, in the finest level's pixels."""
    full = target.shape[-1]
    total = target.new_zeros(())
    for weight, flow in zip(LEVEL_WEIGHTS, flows, strict=True):
        size = flow.shape[-2:]
        ratio = full / size[-1]
        gt = F.interpolate(target, size=size, mode="area") / ratio if ratio != 1 else target
        epe = torch.linalg.vector_norm(flow - gt, dim=1).mean() * ratio
        total = total + weight * epe
    return total


def _epe(flow: torch.Tensor, target: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(flow - target, dim=1).mean())


def validate(net: SpyNet, pairs: FlowPairs, count: int = 32) -> tuple[float, float]:
    """(EPE of the net, EPE of zero flow) on a fixed draw of synthetic pairs."""
    gen = torch.Generator().manual_seed(12345)
    ref, supp, flow = pairs.sample(count, gen)
    with torch.no_grad():
        pred = net.level_flows(ref, supp)[-1]
    return _epe(pred, flow), _epe(torch.zeros_like(flow), flow)


def davis_alignment(net: SpyNet, root: Path, sigma: float = 20.0, crop: int = 256) -> dict[str, tuple[float, float]]:
    """Per sequence: mean |clean ref - clean supp warped| at 1/4 size, with the net's flow (from noisy frames) and
    with zero flow. Frames t and t+1 at t = 0, 4, 8; centre crops; noise seeded per sequence."""
    out: dict[str, tuple[float, float]] = {}
    for files in collect_sequences([root], min_frames=10):
        name = files[0].parent.name
        gen = torch.Generator().manual_seed(7)
        errs, zeros = [], []
        for t in (0, 4, 8):
            pair = torch.stack([read_image(files[t]), read_image(files[t + 1])]).float() / 255
            h, w = pair.shape[-2:]
            y0, x0 = (h - crop) // 2, (w - crop) // 2
            pair = pair[..., y0 : y0 + crop, x0 : x0 + crop]
            noisy = pair + sigma / 255 * torch.randn(pair.shape, generator=gen)
            low = F.interpolate(noisy, scale_factor=0.25, mode="bicubic")
            clean = F.interpolate(pair, scale_factor=0.25, mode="bicubic")
            with torch.no_grad():
                flow = net(low[:1], low[1:])
            warped = flow_warp(clean[1:], flow.permute(0, 2, 3, 1), padding_mode="border")
            inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))
            errs.append(float((warped - clean[:1]).abs()[inner].mean()))
            zeros.append(float((clean[1:] - clean[:1]).abs()[inner].mean()))
        out[name] = (sum(errs) / len(errs), sum(zeros) / len(zeros))
    return out


def _state(net: SpyNet, opt: torch.optim.Optimizer, step: int, gen: torch.Generator, losses: list[float]) -> Any:
    return {
        "model": net.state_dict(),
        "optimizer": opt.state_dict(),
        "step": step,
        "generator": gen.get_state(),
        "losses": losses,
    }


def train(args: argparse.Namespace) -> None:
    run: Path = args.run
    run.mkdir(parents=True, exist_ok=True)
    files = collect_images(args.stills)
    pairs = FlowPairs(files, size=args.size)
    net = load_spynet(args.init)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    step, losses = 0, []
    last = run / "last.pt"
    if last.exists():
        st = torch.load(last, map_location="cpu", weights_only=False)
        net.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        gen.set_state(st["generator"])
        step, losses = st["step"], st["losses"]
        log.info("resumed %s at step %d", last, step)
    start, t0 = step, time.perf_counter()
    while step < args.steps:
        if args.minutes and time.perf_counter() - t0 > args.minutes * 60:
            break
        for group in opt.param_groups:
            group["lr"] = args.lr * lr_factor(step, args.steps, 100)
        ref, supp, flow = pairs.sample(args.batch, gen)
        loss = level_loss(net.level_flows(ref, supp), flow)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % 25 == 0 or step == args.steps:
            torch.save(_state(net, opt, step, gen, losses), run / "last.tmp")
            (run / "last.tmp").replace(last)
            epe, zero = validate(net, pairs)
            rate = (time.perf_counter() - t0) / (step - start)
            log.info(
                "step %d loss %.3f val EPE %.3f (zero flow %.3f) %.2f s/step",
                step,
                sum(losses[-25:]) / 25,
                epe,
                zero,
                rate,
            )


def install(run: Path, base: Path, output: Path) -> None:
    """Copy the trained SpyNet into an exported RVRT checkpoint (official layout, dtypes kept)."""
    st = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    blob = torch.load(base, map_location="cpu", weights_only=True)
    sd = blob["params"]
    for k, v in st["model"].items():
        key = "spynet." + k
        sd[key] = v.to(sd[key].dtype) if key not in ("spynet.mean", "spynet.std") else v
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(blob, output)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--stills", type=Path, nargs="*", default=[])
    ap.add_argument("--init", type=Path, help="RVRT checkpoint whose spynet.* start the run (else zero flow)")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--minutes", type=float, default=0.0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=64, help="low-resolution side of a training pair")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--evaluate", type=Path, help="DAVIS folder: alignment of real frames vs zero flow")
    ap.add_argument("--install", type=Path, help="RVRT checkpoint to receive the trained SpyNet")
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    if args.install:
        if args.output is None:
            ap.error("--install needs -o OUT.pth")
        install(args.run, args.install, args.output)
        return 0
    if args.evaluate:
        net = SpyNet()
        net.load_state_dict(torch.load(args.run / "last.pt", map_location="cpu", weights_only=False)["model"])
        res = davis_alignment(net.eval(), args.evaluate)
        for name, (err, zero) in res.items():
            log.info("%-20s flow %.4f zero %.4f ratio %.2f", name, err, zero, err / zero)
        mean = [sum(v[i] for v in res.values()) / len(res) for i in (0, 1)]
        log.info("mean flow %.4f zero %.4f ratio %.3f", mean[0], mean[1], mean[0] / mean[1])
        return 0
    if not args.stills:
        ap.error("training needs --stills FOLDER...")
    train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
