"""A differentiable guided deformable attention for training RVRT.

``vsnystra.archs.rvrt_gda.deform_attn`` is written for inference (in-place accumulation and ``out=`` arguments keep
its memory small) and cannot be differentiated. This version computes the same function (same sampling grid, same
softmax over clip x taps samples) with out-of-place tensor ops, and ``differentiable_gda()`` swaps it in for the
duration of a training step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from vsnystra.archs import rvrt_gda


def deform_attn_autograd(
    q: torch.Tensor,
    kv: torch.Tensor,
    offset: torch.Tensor,
    *,
    heads: int,
    groups: int,
    clip: int,
    kernel: tuple[int, int] = (3, 3),
    max_elems: int = 0,
) -> torch.Tensor:
    """Same contract as rvrt_gda.deform_attn (``max_elems`` is ignored: the whole frame is one band)."""
    del max_elems
    bt, cq, h, w = q.shape
    b, ckv = kv.shape[0], kv.shape[2]
    taps = kernel[0] * kernel[1]
    d, cg = cq // heads, ckv // groups
    idx = (torch.arange(clip).view(-1, 1) + torch.arange(clip).view(1, -1)) % clip
    src = kv[:, idx.flatten().to(kv.device)].reshape(b * clip * clip * groups, cg, h, w)
    off = offset.view(bt, clip, groups, taps, 2, h, w)
    base_y, base_x, sy, sx = rvrt_gda._base_grid(slice(0, h), h, w, kernel, q.dtype, q.device)
    gx = base_x + off[:, :, :, :, 1] * sx
    gy = base_y + off[:, :, :, :, 0] * sy
    grid = torch.stack([gx, gy], dim=-1).reshape(bt * clip * groups, taps * h * w, 1, 2)
    cols = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    cols = cols.view(bt, clip, 2, heads, d, taps, h * w)
    qs = (q * d**-0.5).view(bt, heads, d, h * w)
    logits = torch.einsum("bnhdkp,bhdp->bhnkp", cols[:, :, 0], qs).reshape(bt, heads, clip * taps, h * w)
    attn = logits.softmax(dim=2).view(bt, heads, clip, taps, h * w)
    out = torch.einsum("bnhdkp,bhnkp->bhdp", cols[:, :, 1], attn)
    return out.reshape(bt, cq, h, w)


@contextlib.contextmanager
def differentiable_gda() -> Iterator[None]:
    """Use deform_attn_autograd inside RVRT's alignment modules while the context is open."""
    original = rvrt_gda.deform_attn
    rvrt_gda.deform_attn = deform_attn_autograd  # type: ignore[assignment]
    try:
        yield
    finally:
        rvrt_gda.deform_attn = original
