"""restore_image: the official test-time procedure of SwinIR and Uformer, with optional smooth tiling.

SwinIR (main_test_swinir.py): mirror-pad bottom/right to (h // ws + 1)·ws (always 1..ws rows), run, crop.
Uformer (test_sidd.py / test_gopro_hide.py ``expand2square``): zero-pad into a centred square whose side is a multiple
of 128, run, crop the centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from vsnystra.runtime.tiling import normalise_tile, run_tiled


@dataclass(frozen=True)
class SizeRequirements:
    """What a forward needs of its input: sides a multiple of ``multiple_of`` (after the official padding)."""

    multiple_of: int
    square: bool
    minimum: int = 1


def _info(model: nn.Module, where: str) -> object:
    info = getattr(model, "info", None)
    if info is None:
        raise TypeError(f"{where}: model has no .info; load it with vsnystra.load_model(path)")
    return info


def size_requirements(model: nn.Module) -> SizeRequirements:
    """Live size rule of a loaded image model (follows patch_attention's enlarged windows)."""
    info = _info(model, "size_requirements")
    arch = getattr(info, "arch", None)
    if arch == "swinir":
        return SizeRequirements(multiple_of=int(getattr(model, "pad_multiple", 8)), square=False)
    if arch == "uformer":
        multiple = model.size_multiple() if hasattr(model, "size_multiple") else 128  # type: ignore[operator]
        return SizeRequirements(multiple_of=int(multiple), square=True)
    raise TypeError(f"restore_image: {arch} is not an image model; use vsnystra.restore_video for RVRT")


def _mirror_index(length: int, target: int, device: torch.device) -> torch.Tensor:
    """Indices of a symmetric (edge-repeating) extension of [0, length) to ``target`` samples.

    Equals upstream's cat([x, flip(x)])[:target] whenever target <= 2·length, and keeps mirroring beyond that
    (tiny inputs), where upstream would fail.
    """
    i = torch.arange(target, device=device) % (2 * length)
    return torch.where(i < length, i, 2 * length - 1 - i)


def swinir_pad(x: torch.Tensor, ws: int) -> torch.Tensor:
    """main_test_swinir.py padding: always to (h // ws + 1)·ws by mirroring (incl. the edge row)."""
    h, w = x.shape[-2:]
    th, tw = (h // ws + 1) * ws, (w // ws + 1) * ws
    x = x.index_select(-2, _mirror_index(h, th, x.device))
    return x.index_select(-1, _mirror_index(w, tw, x.device))


def _swinir(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    scale = int(_info(model, "restore_image").scale)  # type: ignore[attr-defined]
    ws = size_requirements(model).multiple_of
    return model(swinir_pad(x, ws))[..., : h * scale, : w * scale]


def _uformer(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    factor = size_requirements(model).multiple_of
    side = math.ceil(max(h, w) / factor) * factor
    top, left = (side - h) // 2, (side - w) // 2
    canvas = x.new_zeros(b, c, side, side)
    canvas[..., top : top + h, left : left + w] = x
    return model(canvas)[..., top : top + h, left : left + w]


def restore_image(
    model: nn.Module,
    image: torch.Tensor,
    *,
    tile: int | tuple[int, int] | None = None,
    tile_overlap: int = 32,
) -> torch.Tensor:
    """Restore (C,H,W) or (B,C,H,W) floats in [0,1] with the official test procedure; returns the input's layout.

    Runs on the model's device and dtype and returns the input's device and dtype. ``tile`` (int or (w, h)) splits
    the image into overlapping tiles whose outputs are cross-faded over ``tile_overlap`` pixels.
    """
    if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4) or not image.is_floating_point():
        got = f"{tuple(image.shape)} {image.dtype}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"restore_image: image must be a float tensor (C,H,W) or (B,C,H,W), got {got}")
    info = _info(model, "restore_image")
    arch = getattr(info, "arch", None)
    run = _swinir if arch == "swinir" else _uformer if arch == "uformer" else None
    if run is None:
        raise TypeError(f"restore_image: {arch} is not an image model; use vsnystra.restore_video for RVRT")
    expected = int(getattr(info, "in_channels", image.shape[-3]))
    if image.shape[-3] != expected:
        raise ValueError(
            f"restore_image: the model expects {expected} channel(s), got {image.shape[-3]}; "
            "convert the image (e.g. RGB for colour models, a single plane for grey ones)"
        )
    if tile_overlap < 0:
        raise ValueError(f"restore_image: tile_overlap must be >= 0, got {tile_overlap}")
    param = next(model.parameters())
    x = image if image.dim() == 4 else image.unsqueeze(0)
    x = x.to(device=param.device, dtype=param.dtype)
    scale = int(getattr(info, "scale", 1))
    with torch.no_grad():
        if tile is None:
            y = run(model, x)
        else:
            th, tw = normalise_tile(tile, x.shape[-2], x.shape[-1])
            y = run_tiled(lambda t: run(model, t), x, (th, tw), tile_overlap, scale)
    y = y.to(device=image.device, dtype=image.dtype)
    return y if image.dim() == 4 else y[0]
