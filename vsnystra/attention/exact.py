"""Exact softmax window attention: through SDPA (the default) and written out as upstream does (the baseline)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vsnystra.attention.grid import MaskRuns
from vsnystra.attention.masks import cached_mask_runs


def exact_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    bias: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q·kᵀ·scale + bias + mask)·v through SDPA with one 4-D additive mask.

    Layout matters on CPU: SDPA takes its fused path only with a 4-D mask of the batch's shape (a 3-D mask
    broadcast over the batch is ~2x slower), and a stride-0 expand costs nothing. With a shift mask the batch
    (B·nW, nH) is viewed as (B, nW·nH) so bias + mask is materialised once per window, never per image.
    """
    bn, nh, n, d = q.shape
    dt = q.dtype
    if bias is None and mask is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    if mask is None:
        assert bias is not None
        term = bias.to(dt).unsqueeze(0).expand(bn, nh, n, n)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=term, scale=scale)
    nw = mask.shape[0]
    if bn % nw:
        raise ValueError(
            f"attention: batch {bn} is not a multiple of the mask's {nw} windows; pass q, k, v as "
            "(B·nW, nH, N, d) with windows-major batches and mask as (nW, N, N)"
        )
    b = bn // nw
    runs = cached_mask_runs(mask)
    if runs is not None and len(runs.reps) * 2 <= nw:
        return _exact_by_pattern(q, k, v, scale, bias, mask, runs)
    m = mask.to(dt).unsqueeze(1)
    term = (m + bias.to(dt).unsqueeze(0)) if bias is not None else m.expand(nw, nh, n, n).contiguous()
    term = term.reshape(1, nw * nh, n, n).expand(b, nw * nh, n, n)
    out = F.scaled_dot_product_attention(
        q.reshape(b, nw * nh, n, d),
        k.reshape(b, nw * nh, n, d),
        v.reshape(b, nw * nh, n, v.shape[-1]),
        attn_mask=term,
        scale=scale,
    )
    return out.reshape(bn, nh, n, v.shape[-1])


def _exact_by_pattern(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    bias: torch.Tensor | None,
    mask: torch.Tensor,
    runs: MaskRuns,
) -> torch.Tensor:
    """SDPA per run of windows sharing a mask pattern, with bias + that pattern's mask broadcast over the run."""
    bn, nh, n, _ = q.shape
    nw = mask.shape[0]
    dt = q.dtype
    term = mask[list(runs.reps)].to(dt).unsqueeze(1)
    term = (term + bias.to(dt).unsqueeze(0)) if bias is not None else term.expand(-1, nh, n, n).contiguous()
    # token-major storage, as SDPA's own output: the callers' out.transpose(1, 2).reshape(bn, n, c) is then a view
    out = torch.empty(bn, n, nh, v.shape[-1], dtype=dt, device=q.device).transpose(1, 2)
    for img in range(bn // nw):
        for w0, w1, u in runs.runs:
            s, e = img * nw + w0, img * nw + w1
            out[s:e] = F.scaled_dot_product_attention(
                q[s:e], k[s:e], v[s:e], attn_mask=term[u].expand(e - s, nh, n, n), scale=scale
            )
    return out


def naive_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    bias: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Upstream's formulation written out (the stock baseline): scale, q·kᵀ, + bias, + mask, softmax, ·v."""
    bn, nh, n, _ = q.shape
    logits = (q * scale) @ k.transpose(-2, -1)
    if bias is not None:
        logits = logits + bias.to(logits.dtype).unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        logits = logits.view(bn // nw, nw, nh, n, n) + mask.to(logits.dtype).unsqueeze(1).unsqueeze(0)
        logits = logits.view(bn, nh, n, n)
    return logits.softmax(dim=-1) @ v
