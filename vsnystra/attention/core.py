"""Dispatch of the attention seam to its implementations."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vsnystra.attention.specs import AttentionSpec, Exact, Naive, PnPNystra


def _additive_terms(
    q: torch.Tensor, bias: torch.Tensor | None, mask: torch.Tensor | None
) -> tuple[torch.Tensor | None, int]:
    """Fold bias (nH,N,N) and mask (nW,N,N) into one additive term broadcastable to (B, nW, nH, N, N)."""
    bn, nh, n, _ = q.shape
    term: torch.Tensor | None = None
    nw = 1
    if bias is not None:
        term = bias.to(q.dtype).reshape(1, 1, nh, n, n)
    if mask is not None:
        nw = mask.shape[0]
        if bn % nw:
            raise ValueError(f"attention: batch {bn} is not a multiple of the mask's {nw} windows")
        m = mask.to(q.dtype).reshape(1, nw, 1, n, n)
        term = m if term is None else term + m
    return term, nw


def exact_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    bias: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    bn, nh, n, d = q.shape
    term, nw = _additive_terms(q, bias, mask)
    if term is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    b = bn // nw
    shape5 = (b, nw, nh, n, -1)
    out = F.scaled_dot_product_attention(
        q.reshape(shape5).flatten(0, 1),
        k.reshape(shape5).flatten(0, 1),
        v.reshape(shape5).flatten(0, 1),
        attn_mask=term.expand(b, nw, nh, n, n).reshape(b * nw, nh, n, n) if nw > 1 else term[0],
        scale=scale,
    )
    return out.reshape(bn, nh, n, v.shape[-1])


def naive_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    bias: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    bn, nh, n, _ = q.shape
    logits = (q * scale) @ k.transpose(-2, -1)
    if bias is not None:
        logits = logits + bias.to(logits.dtype).unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        logits = logits.view(bn // nw, nw, nh, n, n) + mask.to(logits.dtype).unsqueeze(1).unsqueeze(0)
        logits = logits.view(bn, nh, n, n)
    return logits.softmax(dim=-1) @ v


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    bias: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    spec: AttentionSpec = Exact(),  # noqa: B008 - frozen dataclass, immutable
    window: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """softmax(q·kᵀ·scale + bias + mask)·v per window and head, computed as ``spec`` says."""
    if isinstance(spec, Exact):
        return exact_attention(q, k, v, scale=scale, bias=bias, mask=mask)
    if isinstance(spec, Naive):
        return naive_attention(q, k, v, scale=scale, bias=bias, mask=mask)
    if isinstance(spec, PnPNystra):
        from vsnystra.attention.nystra import nystra_attention

        return nystra_attention(q, k, v, scale=scale, bias=bias, mask=mask, spec=spec, window=window)
    raise TypeError(f"attention: unknown spec {spec!r}; use Exact(), Naive() or PnPNystra(...)")
