"""Dispatch of the attention seam to its implementations."""

from __future__ import annotations

import torch

from vsnystra.attention.exact import exact_attention, naive_attention
from vsnystra.attention.nystra import nystra_attention
from vsnystra.attention.nystra_traced import traced_nystra_attention
from vsnystra.attention.specs import AttentionSpec, Exact, Naive, PnPNystra
from vsnystra.attention.tracing import exporting


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
    """softmax(q·kᵀ·scale + bias + mask)·v per window and head, computed as ``spec`` says.

    q, k, v: (B·nW, nH, N, d); bias: (nH, N, N) gathered relative-position bias; mask: (nW, N, N) additive shift
    mask (0/-100), windows-major batches; window: the token grid (h, w) or (t, h, w) of one window (PnP-Nystra
    landmark segments follow it; default the closest square factorisation of N, as the research code does).
    """
    if q.dim() != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"attention: q, k, v must be (B·nW, nH, N, d) with equal leading dims, got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if isinstance(spec, Exact):
        return exact_attention(q, k, v, scale=scale, bias=bias, mask=mask)
    if isinstance(spec, Naive):
        return naive_attention(q, k, v, scale=scale, bias=bias, mask=mask)
    if isinstance(spec, PnPNystra):
        if exporting():  # fixed graph: out of place, no guard, masks analysed as real constants
            return traced_nystra_attention(q, k, v, scale=scale, bias=bias, mask=mask, spec=spec, window=window)
        return nystra_attention(q, k, v, scale=scale, bias=bias, mask=mask, spec=spec, window=window)
    raise TypeError(f"attention: unknown spec {spec!r}; use Exact(), Naive() or PnPNystra(...)")
