"""Guided deformable attention (RVRT) in pure PyTorch: CPU and CUDA, no compiled extension.

Semantics of upstream's ``deform_attn`` CUDA op (DCNv2 im2col + per-pixel softmax), written without loops:

* ``kv`` holds the keys and values of a clip side by side (2C' channels); its channels are split into ``groups``
  offset groups, so one head's keys and its values are sampled at different positions.
* Query frame ``i`` of a clip reads slot ``n`` from key/value frame ``(i + n) % clip``, tap ``k = 3a + b`` at
  ``(y - pad + a + dy, x - pad + b + dx)``; bilinear, corners outside the image contribute zero (DCN rule).
* Per pixel and head, one softmax over the clip * taps samples of ``<q * d^-1/2, key>`` weights the values.

Three formulations of the same function, picked per call (as the attention seam picks its autograd path), and a
fourth for traces (torch.export, ONNX: plain gathers, :mod:`vsnystra.archs.rvrt_gda_traced`):
* while autograd records (any input requires grad, e.g. training) or inside ``differentiable_gda()``: out-of-place
  tensor ops that can be differentiated (``deform_attn_autograd``);
* otherwise on CPU with even group counts (keys and values in separate groups): bilinear sampling as a weighted
  gather of channel rows (``embedding_bag``) from channels-last kv, values never materialised
  (``_deform_attn_gather``, several times faster than ``grid_sample`` on CPU);
* elsewhere (CUDA, odd group counts): one ``grid_sample`` call per row band samples keys and values
  (``_deform_attn_grid``).
The inference formulations accumulate in place and bound their column buffers by ``max_elems``.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from vsnystra.archs.layers import FrameConv3d, Mlp, Permute
from vsnystra.archs.rvrt_gda_traced import deform_attn_gathers
from vsnystra.attention.tracing import tracing

_DEFAULT_MAX_ELEMS = 1 << 26  # column-buffer elements per band (256 MiB in fp32; bigger bands run faster)
_GATHER_MAX_ELEMS = 1 << 23  # CPU gather path: chunks beyond ~32 MiB only add memory traffic
_FORCE_AUTOGRAD: contextvars.ContextVar[bool] = contextvars.ContextVar("vsnystra_gda_autograd", default=False)


@contextlib.contextmanager
def differentiable_gda() -> Iterator[None]:
    """Inside this block (this thread or task only) deform_attn takes its differentiable formulation even when no
    input requires grad, e.g. to compare it with the inference formulations. Nothing global changes."""
    token = _FORCE_AUTOGRAD.set(True)
    try:
        yield
    finally:
        _FORCE_AUTOGRAD.reset(token)


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
    Any strides are accepted; q and kv that are channels-last underneath (permuted views of (..., H, W, C)
    tensors) avoid copies on CPU, where the result is such a view too.
    """
    if tracing():  # torch.export / ONNX: out-of-place gathers, no data-dependent band sizes
        return deform_attn_gathers(q, kv, offset, heads=heads, groups=groups, clip=clip, kernel=kernel)
    recording = torch.is_grad_enabled() and (q.requires_grad or kv.requires_grad or offset.requires_grad)
    if recording or _FORCE_AUTOGRAD.get():  # the other formulations write in place and cannot be differentiated
        return deform_attn_autograd(q, kv, offset, heads=heads, groups=groups, clip=clip, kernel=kernel)
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
    bt, cq = q.shape[:2]
    b = kv.shape[0]
    ckv = kv.shape[2]
    taps = kernel[0] * kernel[1]
    if ckv != 2 * cq or bt != b * clip or ckv % groups or cq % heads or offset.shape[1] != clip * groups * taps * 2:
        raise ValueError(
            f"deform_attn: inconsistent shapes q {tuple(q.shape)}, kv {tuple(kv.shape)}, offset "
            f"{tuple(offset.shape)} for heads={heads}, groups={groups}, clip={clip}, kernel={kernel}"
        )
    if q.device.type == "cpu" and groups % 2 == 0:  # keys and values fill whole offset groups
        return _deform_attn_gather(q, kv, offset, heads, groups, clip, kernel, min(max_elems, _GATHER_MAX_ELEMS))
    return _deform_attn_grid(q, kv, offset, heads, groups, clip, kernel, max_elems)


def deform_attn_autograd(
    q: torch.Tensor,
    kv: torch.Tensor,
    offset: torch.Tensor,
    *,
    heads: int,
    groups: int,
    clip: int,
    kernel: tuple[int, int] = (3, 3),
) -> torch.Tensor:
    """Same contract as deform_attn, differentiable: out-of-place ops, the whole frame in one band."""
    bt, cq, h, w = q.shape
    b, ckv = kv.shape[0], kv.shape[2]
    taps = kernel[0] * kernel[1]
    d, cg = cq // heads, ckv // groups
    idx = (torch.arange(clip).view(-1, 1) + torch.arange(clip).view(1, -1)) % clip
    src = kv[:, idx.flatten().to(kv.device)].reshape(b * clip * clip * groups, cg, h, w)
    off = offset.view(bt, clip, groups, taps, 2, h, w)
    base_y, base_x, sy, sx = _base_grid(slice(0, h), h, w, kernel, q.dtype, q.device)
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


def _deform_attn_grid(
    q: torch.Tensor,
    kv: torch.Tensor,
    offset: torch.Tensor,
    heads: int,
    groups: int,
    clip: int,
    kernel: tuple[int, int],
    max_elems: int,
) -> torch.Tensor:
    """grid_sample formulation (CUDA, odd group counts): sampled keys and values per row band, then the softmax."""
    bt, cq, h, w = q.shape
    b = kv.shape[0]
    ckv = kv.shape[2]
    taps = kernel[0] * kernel[1]
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


def _deform_attn_gather(
    q: torch.Tensor,
    kv: torch.Tensor,
    offset: torch.Tensor,
    heads: int,
    groups: int,
    clip: int,
    kernel: tuple[int, int],
    max_elems: int,
) -> torch.Tensor:
    """CPU formulation: bilinear sampling as weighted row gathers (``embedding_bag``) from channels-last kv.

    grid_sample on CPU reads one channel plane at a time (~4 ns per sampled value); gathering whole channel rows
    of the (pixel, channel) table is ~10x cheaper per value. Keys are sampled per (pixel, sample, key group) and
    dotted with q; the values are never materialised: one bag per (pixel, value block) sums clip * taps * 4
    table rows weighted by attention x bilinear weight. Pixels run in chunks of ``max_elems`` column elements.
    """
    bt, cq, h, w = q.shape
    ckv = kv.shape[2]
    kh, kw = kernel
    taps = kh * kw
    samples = clip * taps
    d = cq // heads
    cg = ckv // groups
    kg, vg = groups // 2, groups - groups // 2  # offset groups holding keys, values
    rv = math.gcd(cg, d)  # value row: inside one group and one head
    per_group = cg // rv
    rows_per_px = ckv // rv
    dev, dt = q.device, q.dtype
    table = kv.permute(0, 1, 3, 4, 2).contiguous()  # (b, clip, H, W, 2C'); free for channels-last kv
    key_rows, value_rows = table.view(-1, cg), table.view(-1, rv)
    itype = torch.int32 if value_rows.shape[0] < 2**31 else torch.int64
    ql = (q.permute(0, 2, 3, 1) * d**-0.5).contiguous().view(bt, h * w, heads, d)
    off = offset.reshape(bt, clip, groups, taps, 2, h * w)
    # query frame i of clip c reads kv frame (i + n) % clip in slot n: first pixel row of that frame in the table
    bi = torch.arange(bt, device=dev).view(-1, 1)
    frame = bi - bi % clip + (bi % clip + torch.arange(clip, device=dev)) % clip
    frame_px = (frame * (h * w)).to(itype).view(bt, clip, 1, 1, 1)
    tap_y = (torch.arange(kh, device=dev, dtype=dt) - kh // 2).repeat_interleave(kw).view(1, 1, 1, taps, 1)
    tap_x = (torch.arange(kw, device=dev, dtype=dt) - kw // 2).repeat(kh).view(1, 1, 1, taps, 1)
    key_id = torch.arange(kg, device=dev, dtype=itype).view(1, 1, kg, 1, 1)
    value_id = (cq // rv + torch.arange(vg * per_group, device=dev, dtype=itype)).view(1, 1, vg, per_group, 1, 1)
    block_head = torch.arange(cq // rv, device=dev) * rv // d
    chunk = max(1, min(h * w, max_elems // (bt * samples * ckv)))
    out = q.new_empty(bt, h * w, cq) if chunk < h * w else None
    for p0 in range(0, h * w, chunk):
        p1 = min(h * w, p0 + chunk)
        n = p1 - p0
        pix = torch.arange(p0, p1, device=dev)
        py = off[..., 0, p0:p1] + (pix // w).to(dt) + tap_y  # (bt, clip, groups, taps, n)
        px = off[..., 1, p0:p1] + (pix % w).to(dt) + tap_x
        y0, x0 = py.floor(), px.floor()
        fy, fx = py.sub_(y0), px.sub_(x0)
        wy = (fy.neg().add_(1).mul_((y0 >= 0) & (y0 <= h - 1)), fy.mul_((y0 >= -1) & (y0 <= h - 2)))
        wx = (fx.neg().add_(1).mul_((x0 >= 0) & (x0 <= w - 1)), fx.mul_((x0 >= -1) & (x0 <= w - 2)))
        ry = (y0.clamp(0, h - 1).to(itype).mul_(w).add_(frame_px), y0.add_(1).clamp_(0, h - 1).to(itype).mul_(w))
        ry[1].add_(frame_px)
        cx = (x0.clamp(0, w - 1).to(itype), x0.add_(1).clamp_(0, w - 1).to(itype))
        # key bags (bt, n, clip, taps, kg) x 4 corners; value bags (bt, n, vg, per_group) x (clip, taps, 4)
        ik = torch.empty(bt, n, clip, taps, kg, 4, dtype=itype, device=dev)
        wk = torch.empty(bt, n, clip, taps, kg, 4, dtype=dt, device=dev)
        iv = torch.empty(bt, n, vg, per_group, clip, taps, 4, dtype=itype, device=dev)
        wg = torch.empty(bt, n, vg, 1, clip, taps, 4, dtype=dt, device=dev)
        ikv, wkv = ik.permute(0, 2, 4, 3, 1, 5), wk.permute(0, 2, 4, 3, 1, 5)
        ivv, wgv = iv.permute(0, 4, 2, 3, 5, 1, 6), wg.permute(0, 4, 2, 3, 5, 1, 6)
        for c in range(4):
            a, e = divmod(c, 2)
            pc = ry[a] + cx[e]  # table pixel of corner c
            torch.add(key_id, pc[:, :, :kg], alpha=groups, out=ikv[..., c])
            torch.add(value_id, pc[:, :, kg:, None], alpha=rows_per_px, out=ivv[..., c])
            torch.mul(wy[a][:, :, :kg], wx[e][:, :, :kg], out=wkv[..., c])
            torch.mul(wy[a][:, :, kg:, None], wx[e][:, :, kg:, None], out=wgv[..., c])
        keys = F.embedding_bag(ik.view(-1, 4), key_rows, per_sample_weights=wk.view(-1, 4), mode="sum")
        logits = keys.view(bt, n, samples, heads, d).mul_(ql[:, p0:p1, None]).sum(-1)
        attn = logits.softmax(dim=2)  # (bt, n, samples, heads)
        if rv != d:
            attn = attn.index_select(3, block_head)  # one column per value block
        wv = torch.empty_like(iv, dtype=dt)
        torch.mul(wg, attn.view(bt, n, clip, taps, vg, per_group).permute(0, 1, 4, 5, 2, 3).unsqueeze(-1), out=wv)
        ob = F.embedding_bag(
            iv.view(-1, samples * 4), value_rows, per_sample_weights=wv.view(-1, samples * 4), mode="sum"
        )
        if out is None:
            return ob.view(bt, h, w, cq).permute(0, 3, 1, 2)
        out[:, p0:p1] = ob.view(bt, n, cq)
    assert out is not None
    return out.view(bt, h, w, cq).permute(0, 3, 1, 2)


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
        layers: list[nn.Module] = [FrameConv3d(channels * (1 + clip) + clip * 2, hidden, kernel_size=(1, 1, 1))]
        for _ in range(4):
            layers += [nn.LeakyReLU(0.1, inplace=True), FrameConv3d(hidden, hidden, (1, 3, 3), padding=(0, 1, 1))]
        layers += [nn.LeakyReLU(0.1, inplace=True), FrameConv3d(hidden, clip * groups * taps * 2, (1, 1, 1))]
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
        # residues + flow (dy, dx) broadcast over the groups x taps pairs of each slot: (b, t, slot, pairs, 2, h, w)
        guide = torch.stack(flows, 2).flip(3).unsqueeze(3)
        off = o.view(b, t, 2, -1, 2, h, w) + guide
        # projections stay channels-last: deform_attn reads them without copies and returns channels-last on CPU
        qp = self.proj_q[1](q.permute(0, 1, 3, 4, 2))
        kp = self.proj_k[1](k.permute(0, 1, 3, 4, 2))
        vp = self.proj_v[1](v.permute(0, 1, 3, 4, 2))
        kv = torch.cat([kp, vp], dim=-1)
        out = deform_attn(
            qp.flatten(0, 1).permute(0, 3, 1, 2),
            kv.permute(0, 1, 4, 2, 3),
            off.view(b * t, -1, h, w),
            heads=self.heads,
            groups=self.groups,
            clip=self.clip,
            kernel=self.kernel,
            max_elems=self.max_elems,
        )
        y = self.proj[1](out.permute(0, 2, 3, 1).reshape(b, t, h, w, self.proj_channels))
        y = y + self.mlp[1](y)
        y = y.permute(0, 1, 4, 2, 3)
        if not return_flows:
            return y, None, None
        f1 = off[:, :, 0].mean(2).flip(2)
        f2 = off[:, :, 1].mean(2).flip(2)
        return y, f1, f2
