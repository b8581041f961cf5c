"""Half precision that never blacks out: a tile whose half-precision output is not finite is recomputed in fp32.

Why: SwinIR's activations overflow fp16 on some content (black or NaN frames: JingyunLiang/SwinIR#103,
AmusementClub/vs-mlrt#91). bf16 has fp32's range and is preferred where the GPU has it (runtime.device), but any
half-precision tile is still checked; the fp32 recompute is rare, so it costs nothing on normal content. The
warning goes through :mod:`warnings` (shown once per process by the default filter).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import torch
from torch import nn

Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (model, padded input) -> output
Fp32Model = Callable[[], nn.Module]  # the same model in fp32 (e.g. from the model cache), built only when needed


def fp32_copy(model: nn.Module) -> Fp32Model:
    """A lazily built fp32 copy of ``model`` (the caller's model is never changed)."""
    built: list[nn.Module] = []

    def get() -> nn.Module:
        if not built:
            built.append(copy.deepcopy(model).float())
        return built[0]

    return get


def finite_or_fp32(forward: Forward, model: nn.Module, x: torch.Tensor, fp32_model: Fp32Model) -> torch.Tensor:
    """``forward(model, x)``; a half-precision result with any inf or NaN is recomputed in fp32 (returned in fp32)."""
    y = forward(model, x)
    if y.dtype not in (torch.float16, torch.bfloat16) or bool(torch.isfinite(y).all()):
        return y
    warnings.warn(
        f"vsnystra: a {str(y.dtype).removeprefix('torch.')} tile produced inf/NaN (half-precision overflow); "
        "recomputed in fp32",
        RuntimeWarning,
        stacklevel=2,
    )
    return forward(fp32_model(), x.float())
