"""The training loop: Charbonnier loss, AdamW with warm-up + cosine decay, periodic resumable checkpoints.

A checkpoint (``<run>/last.pt``) holds the model, optimizer, step, the data/noise generator state and the global
torch RNG state; resuming from it continues the exact same loss trajectory as an uninterrupted run (with the same
thread count: CPU kernels may sum in another order with more threads).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vsnystra.archs.rvrt_gda import differentiable_gda
from vsnystra.training.data import ClipPatches, ImagePatches, SRPairs, collect_images, collect_sequences
from vsnystra.training.degrade import add_gaussian_noise
from vsnystra.training.motion import MotionClips
from vsnystra.training.presets import Preset, model_class
from vsnystra.training.rvrt_init import space_to_depth_start, supports_space_to_depth
from vsnystra.training.rvrt_temporal import (
    add_mixing_gates,
    fold_mixing_gates,
    load_matching,
    supports_temporal_start,
    temporal_start,
)

log = logging.getLogger(__name__)

CHECKPOINT = "last.pt"


@dataclass
class RunConfig:
    """Options of one run that are not part of the model preset."""

    data: list[Path]
    run_dir: Path
    steps: int
    minutes: float = 0.0  # wall-clock budget; 0 = none
    seed: int = 0
    save_every: int = 100
    log_every: int = 10
    init: Path | None = None  # start from these weights (an exported checkpoint) instead of the preset's init
    init_rewire: bool = False  # --init: load what fits, then apply the preset's start rewiring (temporal_start)
    stills: list[Path] = field(default_factory=list)  # video: stills moved by a synthetic camera (Preset.still_clips)


def charbonnier(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier (smooth L1) loss, robust and PSNR-friendly."""
    return torch.sqrt((x - y) ** 2 + eps * eps).mean()


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 1% of the base rate."""
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * t))


def param_groups(model: nn.Module, lr_scale: tuple[tuple[str, float], ...]) -> list[dict[str, Any]]:
    """Trainable parameters grouped by learning-rate multiplier (first matching regex wins; the rest at 1)."""
    groups: dict[float, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = next((float(f) for pattern, f in lr_scale if re.search(pattern, name)), 1.0)
        groups.setdefault(scale, []).append(p)
    return [{"params": ps, "lr_scale": scale} for scale, ps in sorted(groups.items())]


def build_model(preset: Preset, seed: int) -> nn.Module:
    """Construct the preset's model with seeded initialisation (without touching the caller's global RNG)."""
    cls = model_class(preset.arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(**preset.kwargs)
    if preset.arch == "rvrt":
        identity_spynet(model)
        if preset.task == "video_denoise" and supports_space_to_depth(model):
            space_to_depth_start(model)
        if preset.temporal_start and supports_temporal_start(model):
            temporal_start(model)
    if preset.arch == "swinir" and preset.kwargs.get("upsampler") == "pixelshuffle" and preset.scale == 2:
        bilinear_start(model)
    if preset.arch == "uformer":
        near_identity_start(model)
    return model


def near_identity_start(model: nn.Module) -> None:
    """Scale Uformer's output projection down 100x so the network starts close to the identity (output = input +
    small residual): from the stock init the residual is as large as the image and the first CPU-budget steps
    would be spent just learning to cancel it."""
    m: Any = model
    with torch.no_grad():
        m.output_proj.proj[0].weight.mul_(0.01)
        m.output_proj.proj[0].bias.zero_()


def bilinear_start(model: nn.Module) -> None:
    """Initialise a x2 'pixelshuffle' SwinIR so that it starts as a bilinear upscaler.

    SwinIR has no image-level skip connection: from a random init it needs thousands of steps just to reproduce
    the input, which a CPU budget cannot afford. Six feature channels carry +x and -x through conv_first,
    conv_before_upsample (+x and -x survive the LeakyReLU as leaky(x) - leaky(-x) = 1.01 x) and a bilinear
    PixelShuffle kernel; conv_last recombines them; the transformer body enters through a zeroed conv_after_body
    and the other channels through zeroed conv_last weights, so training learns a residual over bilinear.
    """
    m: Any = model
    c_in = m.conv_first.in_channels
    up = m.upsample[0]
    phases = (torch.tensor([0.25, 0.75, 0.0]), torch.tensor([0.0, 0.75, 0.25]))  # align_corners=False, x2
    slope = 0.01  # nn.LeakyReLU() default in conv_before_upsample
    with torch.no_grad():
        for conv in (m.conv_first, m.conv_before_upsample[0]):
            conv.weight[: 2 * c_in].zero_()
            conv.bias[: 2 * c_in].zero_()
        m.conv_after_body.weight.zero_()
        m.conv_after_body.bias.zero_()
        up.weight[: 8 * c_in].zero_()
        up.bias[: 8 * c_in].zero_()
        m.conv_last.weight.zero_()
        m.conv_last.bias.zero_()
        for c in range(c_in):
            for sign in (0, 1):
                ch = 2 * c + sign
                m.conv_first.weight[ch, c, 1, 1] = 1.0 if sign == 0 else -1.0
                m.conv_before_upsample[0].weight[ch, ch, 1, 1] = 1.0
                for i in range(2):
                    for j in range(2):
                        up.weight[ch * 4 + i * 2 + j, ch] = torch.outer(phases[i], phases[j])
                m.conv_last.weight[c, ch, 1, 1] = (1.0 if sign == 0 else -1.0) / (1.0 + slope)


def identity_spynet(model: nn.Module) -> None:
    """Zero the last convolution of every SpyNet level, so the (untrained) flow network predicts zero flow.

    SpyNet cannot be pretrained here (no optical-flow data); with zero flow the guided deformable attention learns
    its sampling offsets on its own (RVRT predicts offset residuals around the flow).
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("spynet.") and ".basic_module.8." in name:
                p.zero_()


@contextlib.contextmanager
def zero_flows(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Replace RVRT's flow estimation by zero flows for one step.

    Exact for the bundled RVRT: its SpyNet is frozen with every level's last convolution zeroed (identity_spynet), so
    it returns exactly zero flow; skipping it saves time and lifts SpyNet's minimum frame size (> 32 px at 1/4
    scale), so training patches may be small.
    """
    if not enabled:
        yield
        return
    m: Any = model

    def compute_flows(lqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, t, _, h, w = lqs.shape
        z = lqs.new_zeros(n, t - 1, 2, h, w)
        return z, z

    m.compute_flows = compute_flows
    try:
        yield
    finally:
        del m.compute_flows


def init_from(model: nn.Module, path: Path, rewire: bool = False) -> dict[str, str]:
    """Load an exported checkpoint (official container, fp16 allowed) into the freshly built model, strictly.

    A fine-tuning leg starts here instead of at the preset's hand-made start point; the optimizer starts fresh.
    With ``rewire`` the checkpoint may come from an earlier layout: what fits is loaded, the rest keeps its init,
    and ``temporal_start`` then rewires the propagation branches (output unchanged, see rvrt_temporal).
    Returns the file's name and sha256 so the run (and its model card) can say where it started.
    """
    from vsnystra.archs.loading import canonical_state_dict
    from vsnystra.training.publish import sha256

    sd = canonical_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    if rewire:
        if not supports_temporal_start(model):
            raise ValueError("vsnystra.training: --init-rewire needs an RVRT denoiser preset with temporal_start")
        left = load_matching(model, sd)
        temporal_start(model)
        log.info("initialised from %s (rewired; %d tensors kept their init: %s)", path, len(left), left)
        return {"file": path.name, "sha256": sha256(path), "rewired": "temporal_start"}
    expected = model.state_dict()
    bad = sorted(set(expected) ^ set(sd)) + [k for k in expected if k in sd and sd[k].shape != expected[k].shape]
    if bad:
        raise ValueError(
            f"vsnystra.training: --init {path} does not fit the preset's model ({len(bad)} key(s) differ, e.g. "
            f"{bad[:3]}); start from a checkpoint of the same preset and --override"
        )
    model.load_state_dict(sd, strict=True)  # copy_ upcasts fp16-stored tensors
    log.info("initialised from %s", path)
    return {"file": path.name, "sha256": sha256(path)}


class Trainer:
    """Owns the model, optimizer, data source and RNG of one run."""

    def __init__(self, preset: Preset, cfg: RunConfig) -> None:
        self.preset = preset
        self.cfg = cfg
        self.model = build_model(preset, cfg.seed)
        self.model.train()
        self.init: dict[str, str] = {}  # where the weights came from when the run fine-tunes (--init)
        if cfg.init is not None:
            self.init = init_from(self.model, cfg.init, cfg.init_rewire)
        if preset.temporal_start and supports_temporal_start(self.model):
            add_mixing_gates(self.model)  # training-only; export_state() folds them back into the weights
        for name, p in self.model.named_parameters():
            if any(name.startswith(prefix) for prefix in preset.freeze):
                p.requires_grad_(False)
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, preset.lr_scale), lr=preset.lr, betas=(0.9, 0.99), weight_decay=0.0
        )
        self.gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.step = 0
        self.elapsed = 0.0
        self.losses: list[float] = []
        self.input_losses: list[float] = []  # what returning the input unchanged would score (denoisers)
        self.source: Any = self._make_source()
        self.stills: MotionClips | None = None
        if preset.task == "video_denoise" and preset.still_clips > 0 and cfg.stills:
            self.stills = MotionClips(collect_images(cfg.stills), preset.frames, preset.patch)

    def _make_source(self) -> Any:
        p = self.preset
        if p.task == "sr":
            return SRPairs(collect_images(self.cfg.data, p.per_folder), p.scale, p.patch)
        if p.task == "denoise":
            return ImagePatches(collect_images(self.cfg.data, p.per_folder), p.patch)
        return ClipPatches(collect_sequences(self.cfg.data, p.frames), p.frames)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, target) for one step, drawn from the run's generator."""
        p = self.preset
        if p.task == "sr":
            lr, hr = self.source.sample(p.batch, p.patch, self.gen)
            return lr, hr
        if self.stills is not None:  # each clip from a real sequence or from a still moved by a synthetic camera
            parts = []
            for _ in range(p.batch):
                still = float(torch.rand((), generator=self.gen)) < p.still_clips
                parts.append((self.stills if still else self.source).sample(1, p.patch, self.gen))
            clean = torch.cat(parts)
        else:
            clean = self.source.sample(p.batch, p.patch, self.gen)
        shape = (clean.shape[0],) + (1,) * (clean.ndim - 1)
        sigma = torch.rand(shape, generator=self.gen) * p.sigma_max
        if p.sigma_low > 0:  # a share of nearly clean clips: told sigma ~ 0, the model must hand its input back
            low = torch.rand(shape, generator=self.gen) < p.sigma_low
            sigma = torch.where(low, torch.rand(shape, generator=self.gen) * 2.0, sigma)
        noisy = add_gaussian_noise(clean, sigma, self.gen)
        if p.task == "video_denoise":
            noise_map = (sigma / 255.0).expand(*clean.shape[:2], 1, *clean.shape[3:])
            noisy = torch.cat([noisy, noise_map], dim=2)
        return noisy, clean

    def train_step(self) -> float:
        for group in self.optimizer.param_groups:
            rate = self.preset.lr * lr_factor(self.step, self.cfg.steps, self.preset.warmup)
            group["lr"] = rate * group.get("lr_scale", 1.0)
        x, y = self.batch()
        ctx = differentiable_gda() if self.preset.arch == "rvrt" else contextlib.nullcontext()
        with ctx, zero_flows(self.model, self.preset.zero_flow):
            out = self.model(x)
            loss = charbonnier(out, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.step += 1
        value = float(loss.detach())
        self.losses.append(value)
        if self.preset.task != "sr":  # denoisers: the loss of returning the noisy input
            self.input_losses.append(float(charbonnier(x[..., : y.shape[-3], :, :], y)))
        return value

    def export_state(self) -> dict[str, torch.Tensor]:
        """The model's weights in the official key layout (training-only parametrisations folded in)."""
        return fold_mixing_gates(self.model.state_dict())

    # -- checkpoints -----------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "preset": self.preset.name,
            "preset_config": self.preset.describe(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "steps": self.cfg.steps,
            "elapsed": self.elapsed,
            "losses": list(self.losses),
            "generator": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "init": dict(self.init),
            "recipe": self.preset.recipe(),
        }

    def save(self) -> Path:
        """Write ``last.pt`` atomically (a crash mid-write never destroys the previous checkpoint)."""
        self.cfg.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.cfg.run_dir / CHECKPOINT
        tmp = path.with_suffix(".tmp")
        torch.save(self.state(), tmp)
        os.replace(tmp, path)
        return path

    def load(self, path: Path) -> None:
        st = torch.load(path, map_location="cpu", weights_only=False)
        if st["preset_config"] != self.preset.describe():
            raise ValueError(
                f"vsnystra.training: {path} was trained with another model configuration; "
                "use a fresh --run folder or the same --model/--override"
            )
        self.model.load_state_dict(st["model"])
        self.optimizer.load_state_dict(st["optimizer"])
        self.step = int(st["step"])
        self.elapsed = float(st["elapsed"])
        self.losses = list(st["losses"])
        self.gen.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        self.init = dict(st.get("init", {}))
        log.info("resumed %s at step %d (%.1f min trained)", path, self.step, self.elapsed / 60)

    def run(self) -> None:
        """Train until ``steps`` or the wall-clock budget, saving every ``save_every`` steps and at the end."""
        cfg = self.cfg
        start = time.monotonic()
        base = self.elapsed
        window: list[float] = []
        while self.step < cfg.steps:
            t0 = time.monotonic()
            loss = self.train_step()
            window.append(loss)
            self.elapsed = base + time.monotonic() - start
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                avg = sum(window) / len(window)
                ref = self.input_losses[-len(window) :]
                window.clear()
                psnr = -10 * math.log10(max(avg, 1e-10) ** 2)
                ident = f" (input {sum(ref) / len(ref):.5f})" if ref else ""
                log.info(
                    "step %d/%d loss %.5f%s (~%.2f dB) lr %.2e %.2f s/step elapsed %.1f min",
                    self.step,
                    cfg.steps,
                    avg,
                    ident,
                    psnr,
                    self.optimizer.param_groups[0]["lr"],
                    time.monotonic() - t0,
                    self.elapsed / 60,
                )
            if self.step % cfg.save_every == 0:
                self.save()
            if cfg.minutes > 0 and time.monotonic() - start >= cfg.minutes * 60:
                log.info("wall-clock budget of %.1f min reached at step %d", cfg.minutes, self.step)
                break
        self.save()


def export(
    model_state: dict[str, torch.Tensor],
    arch: str,
    path: Path,
    fp16: bool = True,
    steps: int = 0,
    keep_fp32: frozenset[str] = frozenset(),
) -> Path:
    """Write the official container: {'params': sd} (SwinIR, RVRT) or {'epoch', 'state_dict': {'module.'+k}}
    (Uformer). Floating tensors optionally in fp16 (half the size; load_state_dict upcasts on copy), except the
    names in ``keep_fp32`` (e.g. SpyNet's normalisation constants)."""
    sd: dict[str, torch.Tensor] = {}
    for k, v in model_state.items():
        t = v.detach().cpu()
        if fp16 and t.is_floating_point() and k not in keep_fp32:
            t = t.half()
        sd[k] = t.contiguous().clone()
    container: dict[str, Any]
    if arch == "uformer":
        container = {"epoch": steps, "state_dict": {"module." + k: v for k, v in sd.items()}}
    else:
        container = {"params": sd}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(container, path)
    return path
