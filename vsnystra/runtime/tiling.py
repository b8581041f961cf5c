"""Spatial tiling with overlap and smooth blending for image models.

Upstream SwinIR averages overlapping tiles with a flat count map, which leaves visible seams on denoising
(JingyunLiang/SwinIR#69); here each tile's output is weighted by a linear ramp across the overlap on every edge that
is not an image border, so neighbouring tiles cross-fade.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering [0, length) with tiles of ``tile`` and stride tile - overlap (last one flush right)."""
    if tile >= length:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def ramp(length: int, width: int, left: bool, right: bool, device: torch.device) -> torch.Tensor:
    """1-D blending weight: linear ramp of ``width`` samples at the edges flagged left/right, 1 elsewhere (> 0)."""
    pos = torch.arange(length, device=device, dtype=torch.float32) + 0.5
    w = torch.ones(length, device=device)
    if width > 0:
        if left:
            w = torch.minimum(w, pos / width)
        if right:
            w = torch.minimum(w, (length - pos) / width)
    return w


def normalise_tile(tile: int | tuple[int, int] | list[int], h: int, w: int) -> tuple[int, int]:
    """Tile as (tile_h, tile_w) clipped to the image; ``tile`` is an int or (width, height) like the CLI."""
    if isinstance(tile, int):
        th, tw = tile, tile
    else:
        tw, th = (int(t) for t in tile)
    if th < 1 or tw < 1:
        raise ValueError(f"restore_image: tile must be positive, got {tile!r}")
    return min(th, h), min(tw, w)


def run_tiled(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile: tuple[int, int],
    overlap: int,
    scale: int,
    blend: str = "ramp",
) -> torch.Tensor:
    """Apply ``fn`` (B,C,h,w) -> (B,C',h·s,w·s) over overlapping tiles of ``x`` and blend the outputs.

    blend="ramp" cross-fades linearly over the overlap; "flat" averages like upstream SwinIR's tile mode.
    """
    if blend not in ("ramp", "flat"):
        raise ValueError(f"run_tiled: blend must be 'ramp' or 'flat', got {blend!r}")
    width = overlap * scale if blend == "ramp" else 0
    b, _, h, w = x.shape
    th, tw = tile
    ys, xs = tile_starts(h, th, overlap), tile_starts(w, tw, overlap)
    out: torch.Tensor | None = None
    weight = torch.zeros(1, 1, h * scale, w * scale, device=x.device)
    for y0 in ys:
        for x0 in xs:
            y = fn(x[..., y0 : y0 + th, x0 : x0 + tw]).float()
            if out is None:
                out = torch.zeros(b, y.shape[1], h * scale, w * scale, device=x.device)
            # the ramp spans the actual overlap with the neighbour (the last tile may overlap more)
            wy = ramp(th * scale, width, y0 > 0, y0 + th < h, x.device)
            wx = ramp(tw * scale, width, x0 > 0, x0 + tw < w, x.device)
            wt = wy[:, None] * wx[None, :]
            sy, sx = slice(y0 * scale, (y0 + th) * scale), slice(x0 * scale, (x0 + tw) * scale)
            out[..., sy, sx] += y.to(x.device) * wt
            weight[..., sy, sx] += wt
    assert out is not None
    return out / weight
