"""restore_image: the official test-time procedure of the image models, with optional smooth tiling.

The model's size rule (``model.info.size_rule``) names the padding its official test uses: "mirror_past" (SwinIR's
main_test_swinir.py: mirror bottom/right to (h // m + 1)·m, always 1..m rows, run, crop), "centred_square"
(Uformer's test_sidd.py ``expand2square``: zeros around the input in a centred square whose side is a multiple of m,
run, crop the centre) or "mirror_to" (mirror up to the next multiple only).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vsnystra.archs.base import SizeRule, model_info
from vsnystra.runtime.tiling import normalise_tile, run_tiled

DEFAULT_TILE_OVERLAP = 32


def size_requirements(model: nn.Module) -> SizeRule:
    """Live size rule of a loaded model (follows patch_attention's enlarged windows)."""
    return model_info(model, "size_requirements").size_rule


def _mirror_index(length: int, target: int, device: torch.device) -> torch.Tensor:
    """Indices of a symmetric (edge-repeating) extension of [0, length) to ``target`` samples.

    Equals upstream's cat([x, flip(x)])[:target] whenever target <= 2·length, and keeps mirroring beyond that
    (tiny inputs), where upstream would fail.
    """
    i = torch.arange(target, device=device) % (2 * length)
    return torch.where(i < length, i, 2 * length - 1 - i)


def mirror_past_pad(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """main_test_swinir.py padding: always to (h // m + 1)·m by mirroring (incl. the edge row)."""
    h, w = x.shape[-2:]
    th, tw = (h // multiple + 1) * multiple, (w // multiple + 1) * multiple
    x = x.index_select(-2, _mirror_index(h, th, x.device))
    return x.index_select(-1, _mirror_index(w, tw, x.device))


def mirror_to_pad(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Mirror bottom/right up to the next multiple (nothing when the sides already are multiples)."""
    h, w = x.shape[-2:]
    th, tw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
    x = x.index_select(-2, _mirror_index(h, th, x.device))
    return x.index_select(-1, _mirror_index(w, tw, x.device))


def _centred_square(model: nn.Module, x: torch.Tensor, multiple: int) -> torch.Tensor:
    """test_sidd.py's expand2square: zeros around the input, centred in a square canvas; run; crop the centre."""
    b, c, h, w = x.shape
    side = math.ceil(max(h, w) / multiple) * multiple
    top, left = (side - h) // 2, (side - w) // 2
    canvas = x.new_zeros(b, c, side, side)
    canvas[..., top : top + h, left : left + w] = x
    out: torch.Tensor = model(canvas)
    return out[..., top : top + h, left : left + w]


def padded_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model on (B, C, H, W) ``x`` with the official test-time padding of its size rule, cropped back."""
    info = model_info(model, "restore_image")
    rule = info.size_rule
    if rule.padding == "centred_square":
        return _centred_square(model, x, rule.multiple_of)
    h, w = x.shape[-2:]
    pad = mirror_past_pad if rule.padding == "mirror_past" else mirror_to_pad
    out: torch.Tensor = model(pad(x, rule.multiple_of))
    return out[..., : h * info.scale, : w * info.scale]


def restore_image(
    model: nn.Module,
    image: torch.Tensor,
    *,
    tile: int | tuple[int, int] | None = None,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
) -> torch.Tensor:
    """Restore (C,H,W) or (B,C,H,W) floats in [0,1] with the official test procedure; returns the input's layout.

    Runs on the model's device and dtype and returns the input's device and dtype. ``tile`` (int or (w, h)) splits
    the image into overlapping tiles whose outputs are cross-faded over ``tile_overlap`` pixels.
    """
    if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4) or not image.is_floating_point():
        got = f"{tuple(image.shape)} {image.dtype}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"restore_image: image must be a float tensor (C,H,W) or (B,C,H,W), got {got}")
    info = model_info(model, "restore_image")
    if info.kind != "image":
        raise TypeError(f"restore_image: {info.arch} is a {info.kind} model; use vsnystra.restore_video")
    expected = info.in_channels
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
    scale = info.scale
    with torch.no_grad():
        if tile is None:
            y = padded_forward(model, x)
        else:
            th, tw = normalise_tile(tile, x.shape[-2], x.shape[-1])
            y = run_tiled(lambda t: padded_forward(model, t), x, (th, tw), tile_overlap, scale)
    y = y.to(device=image.device, dtype=image.dtype)
    return y if image.dim() == 4 else y[0]
