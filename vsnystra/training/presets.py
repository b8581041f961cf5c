"""Model presets of the bundled defaults: architecture, constructor arguments, task and training settings.

The constructor arguments use the upstream keyword names, so a trained model's ``state_dict()`` has the official key
layout and ``vsnystra.load_model`` rebuilds it from tensor shapes alone.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from torch import nn

TrainTask = Literal["sr", "denoise", "video_denoise"]


@dataclass(frozen=True)
class Preset:
    """Everything the loop needs to build and feed one model."""

    name: str
    arch: Literal["swinir", "uformer", "rvrt"]
    task: TrainTask
    kwargs: dict[str, Any]
    scale: int = 1
    patch: int = 64  # input patch side (LR side for SR)
    batch: int = 8
    frames: int = 4  # video clips only
    lr: float = 5e-4
    warmup: int = 50
    sigma_max: float = 50.0  # denoisers: sigma ~ U[0, sigma_max] on the 0-255 scale
    per_folder: int = 0  # image tasks: evenly spaced files kept per folder (0 = all)
    freeze: tuple[str, ...] = field(default_factory=tuple)  # parameter-name prefixes left untrained
    zero_flow: bool = False  # RVRT: skip the (frozen, zero-output) SpyNet in training, so patches may be small
    still_clips: float = 0.0  # video: share of clips made from stills by a synthetic camera (needs --stills)
    sigma_low: float = 0.0  # denoisers: share of samples with sigma ~ U[0, 2] instead of U[0, sigma_max]
    temporal_start: bool = False  # RVRT denoiser: rewire the propagation branches at the start (rvrt_temporal)
    # (regex on parameter names, learning-rate multiplier): weights that must move far from their start, fast
    lr_scale: tuple[tuple[str, float], ...] = field(default_factory=tuple)
    # filter/CLI keyword defaults that follow from how the model was trained (written to models/zoo.json)
    inference: dict[str, Any] = field(default_factory=dict)

    def with_overrides(self, overrides: dict[str, Any]) -> Preset:
        """A copy with fields replaced; the key "kwargs" merges into the constructor arguments."""
        over = dict(overrides)
        kw = {**self.kwargs, **over.pop("kwargs", {})}
        if "freeze" in over:
            over["freeze"] = tuple(over["freeze"])
        if "lr_scale" in over:
            over["lr_scale"] = tuple((str(k), float(v)) for k, v in over["lr_scale"])
        return replace(self, kwargs=kw, **over)

    def recipe(self) -> dict[str, Any]:
        """The training settings besides the architecture (what a model card states), as plain values."""
        skip = ("kwargs", "name", "inference")
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}

    def describe(self) -> str:
        return json.dumps({"arch": self.arch, "task": self.task, "kwargs": self.kwargs}, sort_keys=True)


PRESETS: dict[str, Preset] = {
    "swinir-x2-small": Preset(
        name="swinir-x2-small",
        arch="swinir",
        task="sr",
        scale=2,
        kwargs={
            "upscale": 2,
            "in_chans": 3,
            "img_size": 32,
            "window_size": 8,
            "img_range": 1.0,
            "depths": [4, 4],
            "embed_dim": 48,
            "num_heads": [6, 6],
            "mlp_ratio": 2.0,
            "upsampler": "pixelshuffle",
            "resi_connection": "1conv",
        },
        patch=32,
        batch=8,
        lr=5e-4,
        per_folder=12,
    ),
    "uformer-denoise-small": Preset(
        name="uformer-denoise-small",
        arch="uformer",
        task="denoise",
        kwargs={
            "img_size": 128,
            "embed_dim": 8,
            "depths": [1, 2, 2, 2, 2, 2, 2, 2, 1],
            "num_heads": [1, 2, 4, 8, 16, 16, 8, 4, 2],
            "win_size": 8,
            "mlp_ratio": 4.0,
            "token_projection": "linear",
            "token_mlp": "leff",
            "modulator": True,
            "dd_in": 3,
        },
        patch=128,
        batch=4,
        lr=7e-4,
        per_folder=12,
    ),
    "rvrt-denoise-small": Preset(
        name="rvrt-denoise-small",
        arch="rvrt",
        task="video_denoise",
        kwargs={
            "upscale": 1,
            "clip_size": 2,
            "window_size": [2, 8, 8],
            "num_blocks": [1, 1, 1],
            "depths": [2, 2, 2],
            "embed_dims": [48, 48, 48],
            "num_heads": [6, 6, 6],
            # ungrouped input convolutions: the reconstruction sees every shallow channel (rvrt_init) and each
            # backbone can mix its freshest input with the aligned past channel by channel (rvrt_temporal)
            "inputconv_groups": [1, 1, 1, 1, 1, 1],
            "deformable_groups": 12,
            "attention_heads": 12,
            "attention_window": [3, 3],
            "nonblind_denoising": True,
        },
        patch=96,
        batch=2,
        frames=6,  # three clips: the recurrence takes two alignment steps each way
        lr=5e-5,  # fine-tuning trained weights: 2e-4 from a fresh optimizer cost 2 dB in 150 steps
        warmup=200,
        freeze=("spynet.",),
        zero_flow=True,
        # the backbones' input convolutions decide how much of the aligned past each branch mixes in; from the
        # temporal start that weight must travel from -1 towards 0, which Adam at the base rate takes ~1e4 steps
        # the mixing gates (rvrt_temporal.MixingGate) carry the convex blend with the aligned past directly
        lr_scale=((r"\.mu$", 40.0), (r"^backbone\.\w+\.main\.1\.", 10.0)),
        still_clips=0.5,
        sigma_low=0.1,
        temporal_start=True,
        # chunks as long as the training clips: longer ones drift the recurrence away from anything it was taught
        inference={"chunk": 6, "chunk_overlap": 2},
    ),
}

_CLASS_NAMES = {"swinir": ("SwinIR",), "uformer": ("Uformer",), "rvrt": ("RVRT",)}


def model_class(arch: str) -> type[nn.Module]:
    """The project's module class for ``arch`` (vsnystra.archs.<arch>)."""
    mod = importlib.import_module(f"vsnystra.archs.{arch}")
    for name in _CLASS_NAMES[arch]:
        cls = getattr(mod, name, None)
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            return cls
    raise ImportError(f"vsnystra.training: vsnystra.archs.{arch} has no model class {_CLASS_NAMES[arch]}")


def get_preset(name: str, overrides: dict[str, Any] | None = None) -> Preset:
    """A preset by name, with optional overrides (see Preset.with_overrides)."""
    if name not in PRESETS:
        raise KeyError(f"vsnystra.training: unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    p = PRESETS[name]
    return p.with_overrides(overrides) if overrides else p
