"""Guided deformable attention (RVRT) in pure PyTorch: CPU and CUDA, no compiled extension.

Semantics of upstream's ``deform_attn`` CUDA op (DCNv2 im2col + per-pixel softmax), written without loops:

* ``kv`` holds the keys and values of a clip side by side (2C' channels); its channels are split into ``groups``
  offset groups, so one head's keys and its values are sampled at different positions.
* Query frame ``i`` of a clip reads slot ``n`` from key/value frame ``(i + n) % clip``, tap ``k = 3a + b`` at
  ``(y - pad + a + dy, x - pad + b + dx)``; bilinear, corners outside the image contribute zero (DCN rule).
* Per pixel and head, one softmax over the clip * taps samples of ``<q * d^-1/2, key>`` weights the values.

The sampling is one ``grid_sample`` call per row band (all slots, groups and taps batched), so the column buffer
(clip * 2C' * taps floats per pixel) stays bounded by ``max_elems``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_DEFAULT_MAX_ELEMS = 1 << 26  # column-buffer elements per band (256 MiB in fp32; bigger bands run faster)


class Permute(nn.Module):
    """Parameter-free stand-in for einops Rearrange: keeps upstream's Sequential indices (state-dict keys)."""

    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 on the last dimension (upstream key names ``fc1``/``fc2``)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _base_grid(
    rows: slice, height: int, width: int, kernel: tuple[int, int], dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Normalised tap positions without offsets, (taps, band, 1) for y and (taps, 1, W) for x, and the scales."""
    kh, kw = kernel
    sy = 2.0 / max(height - 1, 1)
    sx = 2.0 / max(width - 1, 1)
    ta = torch.arange(kh, device=device, dtype=dtype).repeat_interleave(kw).view(-1, 1, 1)
    tb = torch.arange(kw, device=device, dtype=dtype).repeat(kh).view(-1, 1, 1)
    ys = torch.arange(rows.start, rows.stop, device=device, dtype=dtype).view(1, -1, 1) - kh // 2
    xs = torch.arange(width, device=device, dtype=dtype).view(1, 1, -1) - kw // 2
    return (ys + ta) * sy - 1.0, (xs + tb) * sx - 1.0, sy, sx


def deform_attn(
    q: torch.Tensor,
    kv: torch.Tensor,
    offset: torch.Tensor,
    *,
    heads: int,
    groups: int,
    clip: int,
    kernel: tuple[int, int] = (3, 3),
    max_elems: int = _DEFAULT_MAX_ELEMS,
) -> torch.Tensor:
    """Guided deformable attention.

    q: (b * clip, C', H, W) projected queries; kv: (b, clip, 2C', H, W) keys ‖ values of the key clip;
    offset: (b * clip, clip * groups * taps * 2, H, W), pairs (dy, dx); returns (b * clip, C', H, W).
    """
    if q.dtype in (torch.float16, torch.bfloat16):  # sampling positions need fp32 (fp16: 0.2 px error at 320 px)
        out32 = deform_attn(
            q.float(),
            kv.float(),
            offset.float(),
            heads=heads,
            groups=groups,
            clip=clip,
            kernel=kernel,
            max_elems=max_elems,
        )
        return out32.to(q.dtype)
    bt, cq, h, w = q.shape
    b = kv.shape[0]
    ckv = kv.shape[2]
    taps = kernel[0] * kernel[1]
    if ckv != 2 * cq or bt != b * clip or ckv % groups or cq % heads or offset.shape[1] != clip * groups * taps * 2:
        raise ValueError(
            f"deform_attn: inconsistent shapes q {tuple(q.shape)}, kv {tuple(kv.shape)}, offset "
            f"{tuple(offset.shape)} for heads={heads}, groups={groups}, clip={clip}, kernel={kernel}"
        )
    d = cq // heads
    cg = ckv // groups
    # sources: query frame i, slot n reads kv frame (i + n) % clip -> batch (b, i, n, group) of cg channels
    idx = (torch.arange(clip).view(-1, 1) + torch.arange(clip).view(1, -1)) % clip
    src = kv[:, idx.flatten().to(kv.device)].reshape(b * clip * clip * groups, cg, h, w)
    off = offset.view(bt, clip, groups, taps, 2, h, w)
    qs = (q * d**-0.5).view(bt, heads, d, h * w)
    out = q.new_zeros(bt, heads, d, h * w)
    per_row = bt * clip * ckv * taps * w
    band = max(1, min(h, max_elems // max(per_row, 1)))
    for r0 in range(0, h, band):
        rows = slice(r0, min(h, r0 + band))
        npx = (rows.stop - rows.start) * w
        base_y, base_x, sy, sx = _base_grid(rows, h, w, kernel, q.dtype, q.device)
        grid = q.new_empty(bt, clip, groups, taps, rows.stop - rows.start, w, 2)
        torch.add(base_x, off[:, :, :, :, 1, rows, :], alpha=sx, out=grid[..., 0])
        torch.add(base_y, off[:, :, :, :, 0, rows, :], alpha=sy, out=grid[..., 1])
        cols = F.grid_sample(
            src,
            grid.view(bt * clip * groups, taps * npx, 1, 2),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=True,
        )
        # (bt, slot, key|value, head, d, tap, pixel): views only, no copies
        cols = cols.view(bt, clip, 2, heads, d, taps, npx)
        qb = qs[..., r0 * w : r0 * w + npx]
        logits = q.new_zeros(bt, clip, heads, taps, npx)
        for j in range(d):  # dot products as d fused multiply-adds: no permuted copies of the columns
            logits.addcmul_(cols[:, :, 0, :, j], qb[:, None, :, j, None, :])
        logits.sub_(logits.amax(dim=(1, 3), keepdim=True)).exp_()
        logits.div_(logits.sum(dim=(1, 3), keepdim=True))
        ob = out[..., r0 * w : r0 * w + npx]
        for n in range(clip):
            for k in range(taps):
                ob.addcmul_(cols[:, n, 1, :, :, k], logits[:, n, :, None, k])
    return out.view(bt, cq, h, w)


class GuidedDeformAttnPack(nn.Module):
    """RVRT's alignment module: offsets from features and warped features, then guided deformable attention.

    Key names follow upstream: ``conv_offset.{0,2,4,6,8,10}``, ``proj_q.1``, ``proj_k.1``, ``proj_v.1``,
    ``proj.1``, ``mlp.1.fc1/fc2`` (indices 0 and 2 are parameter-free permutes, as upstream's Rearrange layers).
    """

    def __init__(
        self,
        channels: int,
        *,
        clip: int = 2,
        groups: int = 12,
        heads: int = 12,
        kernel: tuple[int, int] = (3, 3),
        max_residue_magnitude: float = 10.0,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.clip = clip
        self.groups = groups
        self.heads = heads
        self.kernel = kernel
        self.max_residue_magnitude = max_residue_magnitude
        self.max_elems = _DEFAULT_MAX_ELEMS
        taps = kernel[0] * kernel[1]
        hidden = 64
        layers: list[nn.Module] = [nn.Conv3d(channels * (1 + clip) + clip * 2, hidden, kernel_size=(1, 1, 1))]
        for _ in range(4):
            layers += [nn.LeakyReLU(0.1, inplace=True), nn.Conv3d(hidden, hidden, (1, 3, 3), padding=(0, 1, 1))]
        layers += [nn.LeakyReLU(0.1, inplace=True), nn.Conv3d(hidden, clip * groups * taps * 2, (1, 1, 1))]
        self.conv_offset = nn.Sequential(*layers)
        proj = channels * 2
        self.proj_channels = proj
        to_last, to_first = (0, 1, 3, 4, 2), (0, 1, 4, 2, 3)
        self.proj_q = nn.Sequential(Permute(*to_last), nn.Linear(channels, proj), Permute(*to_first))
        self.proj_k = nn.Sequential(Permute(*to_last), nn.Linear(channels, proj), Permute(*to_first))
        self.proj_v = nn.Sequential(Permute(*to_last), nn.Linear(channels, proj), Permute(*to_first))
        self.proj = nn.Sequential(Permute(*to_last), nn.Linear(proj, channels), Permute(*to_first))
        self.mlp = nn.Sequential(Permute(*to_last), Mlp(channels, channels * 2, channels), Permute(*to_first))

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        warped: list[torch.Tensor],
        flows: list[torch.Tensor],
        return_flows: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """q, k, v, warped[i]: (b, clip, C, H, W); flows[i]: (b, clip, 2, H, W) as (dx, dy).

        Returns the aligned features and, when ``return_flows``, the offset-refined flows of both slots.
        """
        b, t, _, h, w = q.shape
        x = torch.cat([q, *warped, *flows], 2).transpose(1, 2)
        o = torch.tanh(self.conv_offset(x).transpose(1, 2)) * self.max_residue_magnitude
        off1, off2 = torch.chunk(o, 2, dim=2)
        reps = off1.shape[2] // 2
        off1 = off1 + flows[0].flip(2).repeat(1, 1, reps, 1, 1)
        off2 = off2 + flows[1].flip(2).repeat(1, 1, reps, 1, 1)
        offset = torch.cat([off1, off2], dim=2).flatten(0, 1)
        qp = self.proj_q[1](q.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)
        kp = self.proj_k[1](k.permute(0, 1, 3, 4, 2))
        vp = self.proj_v[1](v.permute(0, 1, 3, 4, 2))
        kv = torch.cat([kp, vp], dim=-1).permute(0, 1, 4, 2, 3)
        out = deform_attn(
            qp.reshape(b * t, self.proj_channels, h, w),
            kv,
            offset,
            heads=self.heads,
            groups=self.groups,
            clip=self.clip,
            kernel=self.kernel,
            max_elems=self.max_elems,
        )
        y = self.proj[1](out.view(b, t, self.proj_channels, h, w).permute(0, 1, 3, 4, 2))
        y = y + self.mlp[1](y)
        y = y.permute(0, 1, 4, 2, 3)
        if not return_flows:
            return y, None, None
        c = off1.shape[2]
        f1 = off1.view(b, t, c // 2, 2, h, w).mean(2).flip(2)
        f2 = off2.view(b, t, c // 2, 2, h, w).mean(2).flip(2)
        return y, f1, f2
