"""What every architecture's model offers to the rest of vsnystra: its info, its size rule, its attention blocks.

A built model is a :class:`RestorationModel`: ``model.info`` (a :class:`ModelInfo`) says what it restores and how
its input must be shaped, and every block that partitions windows implements ``configure_attention`` so that
patch_attention never needs to know the architecture. The architecture itself (detection, building, defaults) is
described by an :class:`vsnystra.archs.descriptor.Architecture`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import nn

from vsnystra.attention.specs import AttentionSpec, Exact

Keep = Literal["keep", "drop"]
Task = Literal["sr", "denoise", "deblur", "car", "restore"]
Kind = Literal["image", "video"]
Window = int | tuple[int, ...]
StateDict = Mapping[str, torch.Tensor]  # canonical: parameter and buffer names -> tensors
# How the official test pads an input to the size rule (the runtimes implement each one):
#   "mirror_past":    mirror bottom/right to (side // m + 1) * m, always at least one row (main_test_swinir.py)
#   "centred_square": zeros around the input, centred in a square whose side is a multiple of m (expand2square)
#   "mirror_to":      mirror bottom/right up to the next multiple of m, nothing when it already is one (RVRT)
Padding = Literal["mirror_past", "centred_square", "mirror_to"]


@dataclass(frozen=True)
class SizeRule:
    """What a forward needs of its input: sides a multiple of ``multiple_of``, reached by ``padding``."""

    multiple_of: int
    padding: Padding

    @property
    def square(self) -> bool:
        """True when the forward sees a square canvas (Uformer's geometry)."""
        return self.padding == "centred_square"


@dataclass(frozen=True)
class AttentionConfig:
    """How the window attention of a model runs: what patch_attention asks of every window-attention block.

    window: None keeps the trained window; an int (square 2-D) or a tuple (RVRT: (h, w) or (t, h, w)) enlarges it.
    bias/mask: "drop" stops passing the relative-position bias / the shift mask (the cyclic shift stays).
    modulator: Uformer only; "drop" stops adding the decoder's modulator embedding.
    """

    spec: AttentionSpec = field(default_factory=Exact)
    window: Window | None = None
    bias: Keep = "keep"
    mask: Keep = "keep"
    modulator: Keep = "keep"

    def is_stock(self) -> bool:
        """True when a model can stay exactly as loaded (exact attention, trained window, nothing dropped)."""
        return (
            isinstance(self.spec, Exact)
            and self.window is None
            and (self.bias, self.mask, self.modulator) == ("keep", "keep", "keep")
        )


@dataclass(frozen=True)
class ModelInfo:
    """Facts the runtimes and front ends need about a loaded model."""

    arch: str  # the Architecture's name ("swinir", "uformer", "rvrt")
    kind: Kind  # image models restore frame by frame, video models chunks of frames
    variant: str  # e.g. "classical_sr", "lightweight_sr", "real_sr", "color_dn", "gray_dn", "car", "video_sr"
    task: Task
    scale: int
    in_channels: int  # channels of the image/frames (RVRT denoise: 3, the sigma map is added by restore_video)
    out_channels: int
    window: tuple[int, ...]  # trained window, (ws, ws) or (t, h, w)
    size_rule: SizeRule  # follows patch_attention's windows when read from ``model.info``
    needs_sigma: bool = False  # non-blind denoiser: sigma/255 map appended as an extra channel
    hyperparameters: Mapping[str, object] = field(default_factory=dict)

    @property
    def multiple_of(self) -> int:
        return self.size_rule.multiple_of

    @property
    def square(self) -> bool:
        return self.size_rule.square


class RestorationModel(nn.Module, abc.ABC):
    """The top-level module of every architecture.

    ``info`` is set once by the architecture's build; reading it returns the stored facts with the size rule of the
    current (possibly patched) windows, so there is one size rule and it is never stale.
    """

    _info: ModelInfo | None = None

    @abc.abstractmethod
    def size_rule(self) -> SizeRule:
        """The input size the forward needs with the windows as configured now."""

    @property
    def info(self) -> ModelInfo:
        if self._info is None:
            raise AttributeError(f"{type(self).__name__} has no info; build it with vsnystra.load_model(path)")
        return replace(self._info, size_rule=self.size_rule())

    @info.setter
    def info(self, value: ModelInfo) -> None:
        self._info = value


def model_info(model: nn.Module, caller: str) -> ModelInfo:
    """``model.info`` of a model built by load_model, or a TypeError that says how to get one."""
    if not isinstance(model, RestorationModel) or model._info is None:
        raise TypeError(f"{caller}: expected a model loaded with vsnystra.load_model(path), got {type(model).__name__}")
    return model.info


@runtime_checkable
class ConfigurableAttention(Protocol):
    def configure_attention(self, cfg: AttentionConfig) -> None: ...
