"""The attention seam: every window attention in every architecture calls :func:`attention`.

Swapping the implementation never touches weights: a spec object selects the algorithm.

Shapes (upstream conventions):
    q, k, v: (batch * windows, heads, tokens, head_dim)
    bias:    (heads, tokens, tokens), relative-position bias already gathered from its table
    mask:    (windows, tokens, tokens), additive shifted-window mask (0 / -100), windows-major batches
    window:  optional token-grid shape of one window, (h, w) or (t, h, w)
"""

from __future__ import annotations

from vsnystra.attention.core import attention
from vsnystra.attention.specs import AttentionSpec, Exact, Naive, PnPNystra

__all__ = ["AttentionSpec", "Exact", "Naive", "PnPNystra", "attention"]
