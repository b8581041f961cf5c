"""Realistic window-attention inputs for the attention tests and benchmark: smooth features, Swin shift masks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def shift_mask(h: int, w: int, ws: int, shift: int) -> torch.Tensor:
    """Swin's additive shifted-window mask (nW, ws², ws²): 0 within a region, -100 across."""
    img = torch.zeros(h, w)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[hs, wsl] = cnt
            cnt += 1
    win = img.view(h // ws, ws, w // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


def relative_bias(ws: int, heads: int, gen: torch.Generator, amplitude: float = 2.0) -> torch.Tensor:
    """A smooth relative-position bias (heads, ws², ws²) gathered from a (2ws-1)² table, as Swin does."""
    table = torch.randn(heads, 1, 4, 4, generator=gen) * amplitude
    table = F.interpolate(table, size=(2 * ws - 1, 2 * ws - 1), mode="bilinear", align_corners=True)[:, 0]
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]) + (ws - 1)
    return table[:, rel[0], rel[1]].contiguous()


def window_qkv(
    h: int,
    w: int,
    ws: int,
    heads: int,
    head_dim: int,
    *,
    shift: int = 0,
    seed: int = 0,
    sharpness: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v (nW, heads, ws², head_dim) from a smooth random image through random projections.

    Features are bilinearly upsampled noise (a natural-image-like low-rank structure), so attention maps have the
    fast singular-value decay PnP-Nystra relies on; ``sharpness`` scales q (logit standard deviation).
    """
    gen = torch.Generator().manual_seed(seed)
    c = heads * head_dim
    base = torch.randn(1, 16, max(h // 8, 2), max(w // 8, 2), generator=gen)
    feat = F.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
    feat = torch.cat([feat, 0.05 * torch.randn(h, w, 16, generator=gen)], dim=-1)
    if shift:
        feat = torch.roll(feat, shifts=(-shift, -shift), dims=(0, 1))
    win = feat.view(h // ws, ws, w // ws, ws, -1).permute(0, 2, 1, 3, 4).reshape(-1, ws * ws, feat.shape[-1])
    proj = torch.randn(3, feat.shape[-1], c, generator=gen) / math.sqrt(feat.shape[-1])
    q, k, v = (win @ proj[i] for i in range(3))
    q = q * sharpness * 2.0
    return tuple(t.view(t.shape[0], ws * ws, heads, head_dim).transpose(1, 2).contiguous().to(dtype) for t in (q, k, v))  # type: ignore[return-value]


def shift_mask_3d(d: int, h: int, w: int, ws: tuple[int, int, int], shift: tuple[int, int, int]) -> torch.Tensor:
    """Video Swin / RVRT shifted-window mask (nW, N, N) for a (d, h, w) volume: 0 within a region, -100 across."""
    img = torch.zeros(d, h, w)
    cnt = 0
    for ds in (slice(-ws[0]), slice(-ws[0], -shift[0]), slice(-shift[0], None)):
        for hs in (slice(-ws[1]), slice(-ws[1], -shift[1]), slice(-shift[1], None)):
            for wsl in (slice(-ws[2]), slice(-ws[2], -shift[2]), slice(-shift[2], None)):
                img[ds, hs, wsl] = cnt
                cnt += 1
    win = img.view(d // ws[0], ws[0], h // ws[1], ws[1], w // ws[2], ws[2]).permute(0, 2, 4, 1, 3, 5)
    win = win.reshape(-1, ws[0] * ws[1] * ws[2])
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))
