"""What every architecture module offers to the rest of vsnystra.

An architecture module (swinir, uformer, rvrt) exposes:
    NAME: str
    detect(state_dict) -> bool                      # key names only, cheap
    build(state_dict, **overrides) -> nn.Module     # hyper-parameters read from shapes, strict load

Built models carry ``model.info: ModelInfo``; blocks that partition windows implement
``configure_attention(cfg: AttentionConfig) -> None`` so that patch_attention never needs to know the arch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from vsnystra.attention.specs import AttentionSpec, Exact

Keep = Literal["keep", "drop"]
Task = Literal["sr", "denoise", "deblur", "car", "restore"]


@dataclass(frozen=True)
class AttentionConfig:
    """What patch_attention asks of every window-attention block.

    window: None keeps the trained window; an int (square 2-D) or a tuple (RVRT: (t, h, w)) enlarges it.
    bias/mask: "drop" stops passing the relative-position bias / the shift mask (the cyclic shift stays).
    modulator: Uformer only; "drop" stops adding the decoder's modulator embedding.
    """

    spec: AttentionSpec = field(default_factory=Exact)
    window: int | tuple[int, ...] | None = None
    bias: Keep = "keep"
    mask: Keep = "keep"
    modulator: Keep = "keep"


@dataclass(frozen=True)
class ModelInfo:
    """Facts the runtimes and filters need about a loaded model."""

    arch: Literal["swinir", "uformer", "rvrt"]
    variant: str  # e.g. "classical_sr", "lightweight_sr", "real_sr", "color_dn", "gray_dn", "car", "video_sr"
    task: Task
    scale: int
    in_channels: int  # channels of the image/frames (RVRT denoise: 3, the sigma map is added by restore_video)
    out_channels: int
    window: tuple[int, ...]  # trained window, (ws, ws) or (t, h, w)
    needs_sigma: bool = False  # non-blind denoiser: sigma/255 map appended as an extra channel
    multiple_of: int = 1  # spatial size the forward needs (the official test pads to it)
    square: bool = False  # Uformer's geometry
    hyperparameters: dict[str, object] = field(default_factory=dict)


@runtime_checkable
class ConfigurableAttention(Protocol):
    def configure_attention(self, cfg: AttentionConfig) -> None: ...
