"""Guided deformable attention as plain gathers: the formulation torch.export / ONNX / OpenVINO see.

Why a fourth formulation: the inference ones write in place (``out=``, ``addcmul_``) and pick band sizes at run
time; the differentiable one samples with ``grid_sample``, which not every runtime implements for 5-D layouts. Here
the bilinear sampling is four row gathers (ONNX ``Gather``) from the channels-last key/value table, weighted and
summed out of place, then one softmax per pixel and head. Same contract and semantics as
:func:`vsnystra.archs.rvrt_gda.deform_attn` (corners outside the frame contribute zero); memory is
``bt * H * W * clip * taps * 2C'`` floats, fine for the fixed export sizes.
"""

from __future__ import annotations

import torch


def deform_attn_gathers(
    q: torch.Tensor,
    kv: torch.Tensor,
    offset: torch.Tensor,
    *,
    heads: int,
    groups: int,
    clip: int,
    kernel: tuple[int, int] = (3, 3),
) -> torch.Tensor:
    """q (b * clip, C', H, W), kv (b, clip, 2C', H, W), offset (b * clip, clip * groups * taps * 2, H, W) with
    pairs (dy, dx); returns (b * clip, C', H, W). Shapes only decide the graph: nothing reads tensor values."""
    bt, cq, h, w = q.shape
    b, ckv = kv.shape[0], kv.shape[2]
    kh, kw = kernel
    taps = kh * kw
    d, cg = cq // heads, ckv // groups
    hw = h * w
    dev, dt = q.device, q.dtype
    rows = kv.permute(0, 1, 3, 4, 2).reshape(b * clip * hw * groups, cg)  # row = (frame, pixel, group)
    # (bt, hw, clip, taps, groups): the layout the sampled rows keep, so keys and values are plain reshapes
    off = offset.reshape(bt, clip, groups, taps, 2, hw).permute(0, 5, 1, 3, 2, 4)
    pix = torch.arange(hw, device=dev)
    py0 = (pix // w).to(dt).view(1, hw, 1, 1, 1)
    px0 = (pix % w).to(dt).view(1, hw, 1, 1, 1)
    tap_y = (torch.arange(kh, device=dev, dtype=dt) - kh // 2).repeat_interleave(kw).view(1, 1, 1, taps, 1)
    tap_x = (torch.arange(kw, device=dev, dtype=dt) - kw // 2).repeat(kh).view(1, 1, 1, taps, 1)
    py = off[..., 0] + py0 + tap_y
    px = off[..., 1] + px0 + tap_x
    # query frame i of a clip reads kv frame (i + n) % clip in slot n
    bi = torch.arange(bt, device=dev).view(-1, 1)
    frame = (bi - bi % clip + (bi % clip + torch.arange(clip, device=dev)) % clip).view(bt, 1, clip, 1, 1)
    group = torch.arange(groups, device=dev).view(1, 1, 1, 1, groups)
    y0, x0 = py.floor(), px.floor()
    fy, fx = py - y0, px - x0
    wy = ((1 - fy) * ((y0 >= 0) & (y0 <= h - 1)), fy * ((y0 >= -1) & (y0 <= h - 2)))
    wx = ((1 - fx) * ((x0 >= 0) & (x0 <= w - 1)), fx * ((x0 >= -1) & (x0 <= w - 2)))
    ys = (y0.clamp(0, h - 1).long(), (y0 + 1).clamp(0, h - 1).long())
    xs = (x0.clamp(0, w - 1).long(), (x0 + 1).clamp(0, w - 1).long())
    sampled = torch.zeros(bt, hw, clip, taps, groups, cg, device=dev, dtype=dt)
    for a in range(2):
        for e in range(2):
            index = ((frame * h + ys[a]) * w + xs[e]) * groups + group
            corner = rows.index_select(0, index.reshape(-1)).view(bt, hw, clip, taps, groups, cg)
            sampled = sampled + corner * (wy[a] * wx[e]).unsqueeze(-1)
    sampled = sampled.view(bt, hw, clip * taps, 2, heads, d)
    ql = q.permute(0, 2, 3, 1).reshape(bt, hw, 1, heads, d) * d**-0.5
    attn = (sampled[:, :, :, 0] * ql).sum(-1).softmax(dim=2)  # (bt, hw, samples, heads)
    out = (sampled[:, :, :, 1] * attn.unsqueeze(-1)).sum(2)  # (bt, hw, heads, d)
    return out.reshape(bt, h, w, cq).permute(0, 3, 1, 2)
