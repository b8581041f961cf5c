"""Token grids, landmark segments and shift-mask regions for PnP-Nystra.

Landmarks are segment means over a window's token grid. Without an explicit ``window`` the grid is the closest
square factorisation of the flat token order (as the research code does: 8192 tokens -> 64x128); with one, the
true (h, w) or (t, h, w) layout. Segments are adaptive-average-pooling bins, so non-divisible sizes overlap exactly
as ``F.adaptive_avg_pool*d`` does.

Regions: a shifted-window mask (0 within a region, -100 across) is an equivalence relation on tokens. A token's
region label is the first token it may attend to; this module turns masks into labels and labels into the
per-window (segment, region) landmark pieces that never mix regions (masks.py caches the results per mask).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vsnystra.attention.tracing import exporting, real_tensors

# Mask entries at or below this are "blocked": exp(-30) = 9e-14 relative weight, below fp32 resolution of a sum.
BLOCKED_BELOW = -30.0


def closest_square_factors(n: int) -> tuple[int, int]:
    """(r, c) with r * c = n, r <= c and c - r minimal: the research code's grid rule (16 -> 4x4, 32 -> 4x8)."""
    if n < 1:
        raise ValueError(f"closest_square_factors: n must be >= 1, got {n}")
    for r in range(math.isqrt(n), 0, -1):
        if n % r == 0:
            return r, n // r
    return 1, n  # unreachable: r = 1 always divides


def token_grid(n: int, window: tuple[int, ...] | None) -> tuple[int, ...]:
    """The token grid of one window: ``window`` when given (checked against n), else the closest square pair."""
    if window is None:
        return closest_square_factors(n)
    grid = tuple(int(s) for s in window)
    if len(grid) not in (2, 3) or any(s < 1 for s in grid) or math.prod(grid) != n:
        raise ValueError(
            f"attention: window {tuple(window)} does not describe {n} tokens; pass the token grid of one window, "
            "(h, w) or (t, h, w) with a product equal to the token count, or window=None"
        )
    return grid


def landmark_grid(grid: tuple[int, ...], m: int) -> tuple[int, ...]:
    """Landmark grid with prod = m over ``grid``.

    2-D (h, w): the factor pair of m whose segments are closest to square (h/a ~ w/b), so a 24x6 stripe with 16
    landmarks gets 8x2 segments of 3x3 tokens rather than the research code's 4x4 of 6x1.5 (overlapping) tokens;
    on a square window this is the closest square pair (larger factor along the longer side). 3-D (t, h, w): one
    landmark set per frame when m divides evenly into at least 4 per frame (segments then never straddle frames,
    so temporal shift regions stay aligned), otherwise pooled over time.
    """
    if len(grid) == 2:
        return _segment_grid(grid[0], grid[1], m)
    t, h, w = grid
    mt = t if t > 1 and m % t == 0 and m // t >= 4 else 1
    return (mt, *_segment_grid(h, w, m // mt))


def _segment_grid(h: int, w: int, m: int) -> tuple[int, int]:
    """(a, b), a * b = m, a <= h, b <= w: segments of h/a x w/b tokens as square as possible; ties go to pairs
    whose bins do not overlap (a | h, b | w), then to the closest square pair."""
    r, c = closest_square_factors(m)
    fallback = (c, r) if h > w else (r, c)
    pairs = [(a, m // a) for a in range(1, m + 1) if m % a == 0 and a <= h and m // a <= w]
    if not pairs:
        return fallback

    def score(p: tuple[int, int]) -> tuple[float, int, float]:
        a, b = p
        aspect = round(abs(math.log((h / a) / (w / b))), 9)
        return aspect, (h % a != 0) + (w % b != 0), abs(math.log(a / b))

    return min(pairs, key=lambda p: (*score(p), p != fallback))


def _pool(x: torch.Tensor, lgrid: tuple[int, ...]) -> torch.Tensor:
    """Adaptive average pooling of (B, C, *grid) onto a 2-D or 3-D landmark grid."""
    if len(lgrid) == 2:
        return F.adaptive_avg_pool2d(x, (lgrid[0], lgrid[1]))
    return F.adaptive_avg_pool3d(x, (lgrid[0], lgrid[1], lgrid[2]))


def pool_tokens(x: torch.Tensor, grid: tuple[int, ...], lgrid: tuple[int, ...]) -> torch.Tensor:
    """Landmarks of x (B, H, N, d): segment means over the token grid, exactly as the research code pools."""
    b, nh, _, d = x.shape
    if len(grid) == 3 and exporting():  # ONNX has no 3-D adaptive pooling: the same means as one GEMM
        with real_tensors():
            seg = segment_matrix(grid, lgrid).to(x.dtype)
            rows = (seg / seg.sum(dim=1, keepdim=True)).to(x.device)
        return rows @ x
    xg = x.reshape(b * nh, *grid, d)
    if len(grid) == 2:
        pooled = _pool(xg.permute(0, 3, 1, 2), lgrid).permute(0, 2, 3, 1)
    else:
        pooled = _pool(xg.permute(0, 4, 1, 2, 3), lgrid).permute(0, 2, 3, 4, 1)
    return pooled.reshape(b, nh, math.prod(lgrid), d)


def segment_matrix(grid: tuple[int, ...], lgrid: tuple[int, ...]) -> torch.Tensor:
    """0/1 membership (m, N) of tokens in the adaptive-pooling bins (start floor(i*L/o), end ceil((i+1)*L/o))."""
    per_dim = []
    for size, out in zip(grid, lgrid, strict=True):
        mem = torch.zeros(out, size, dtype=torch.bool)
        for i in range(out):
            mem[i, (i * size) // out : -((-(i + 1) * size) // out)] = True
        per_dim.append(mem)
    full = per_dim[0]
    for mem in per_dim[1:]:
        full = (full[:, None, :, None] & mem[None, :, None, :]).reshape(full.shape[0] * mem.shape[0], -1)
    return full


def mask_labels(mask: torch.Tensor) -> torch.Tensor | None:
    """Region label per token (nW, N) from an additive mask (nW, N, N), or None if the mask is not a region mask.

    A region mask has entries 0 (same region) or <= BLOCKED_BELOW (different regions) and its zero pattern is an
    equivalence relation; the label of token i is the first token j with mask[i, j] == 0.
    """
    zero = mask == 0
    if not bool((zero | (mask <= BLOCKED_BELOW)).all()):
        return None
    labels = zero.to(torch.uint8).argmax(dim=-1)
    if not bool(torch.equal(zero, labels.unsqueeze(-1) == labels.unsqueeze(-2))):
        return None
    return labels


@dataclass(frozen=True)
class RegionLandmarks:
    """Landmark pieces (segment ∩ region) per distinct mask pattern.

    rows: (Q, N) float pooling rows shared by all patterns: the m plain segments first, then extra pieces of
        segments that a region boundary splits, then one all-zero row (index Q-1) for padding.
    index: (U, m') row of ``rows`` used by landmark slot a of pattern u (padding slots point at the zero row).
    region: (U, m') region label of each slot (-1 for padding).
    labels: (U, N) region label per token of each pattern.
    inverse: (nW,) pattern of each window.
    m: number of plain segments; extras are rows m .. Q-2.
    """

    rows: torch.Tensor
    index: torch.Tensor
    region: torch.Tensor
    labels: torch.Tensor
    inverse: torch.Tensor
    m: int

    @property
    def aligned(self) -> bool:
        """True when no segment is split, so the plain pooled landmarks serve every window as they are."""
        return self.rows.shape[0] == self.m + 1


def region_landmarks(labels: torch.Tensor, grid: tuple[int, ...], lgrid: tuple[int, ...]) -> RegionLandmarks:
    """Split every segment by region; each nonempty piece becomes one landmark of that window pattern."""
    seg = segment_matrix(grid, lgrid)  # (m, N) bool
    m, n = seg.shape
    patterns, inverse = torch.unique(labels.cpu(), dim=0, return_inverse=True)
    extra_rows: list[torch.Tensor] = []
    extra_key: dict[bytes, int] = {}
    slots: list[list[tuple[int, int]]] = []
    for lab in patterns:
        regions = torch.unique(lab)
        onehot = lab.unsqueeze(0) == regions.unsqueeze(1)  # (R, N)
        counts = (seg.unsqueeze(1) & onehot.unsqueeze(0)).sum(-1)  # (m, R)
        full = seg.sum(-1)
        pat: list[tuple[int, int]] = []
        for a in range(m):
            for ri in torch.nonzero(counts[a]).flatten().tolist():
                if counts[a, ri] == full[a]:
                    pat.append((a, int(regions[ri])))
                    continue
                piece = seg[a] & onehot[ri]
                key = piece.numpy().tobytes()
                if key not in extra_key:
                    extra_key[key] = m + len(extra_rows)
                    extra_rows.append(piece)
                pat.append((extra_key[key], int(regions[ri])))
        slots.append(pat)
    q = m + len(extra_rows) + 1
    rows = torch.cat([seg, *(r.unsqueeze(0) for r in extra_rows), torch.zeros(1, n, dtype=torch.bool)]).float()
    rows = rows / rows.sum(-1, keepdim=True).clamp_min(1.0)
    width = max(len(p) for p in slots)
    index = torch.full((len(slots), width), q - 1, dtype=torch.long)
    region = torch.full((len(slots), width), -1, dtype=torch.long)
    for u, pat in enumerate(slots):
        for a, (row, reg) in enumerate(pat):
            index[u, a] = row
            region[u, a] = reg
    return RegionLandmarks(rows, index, region, patterns.long(), inverse.long(), m)


@dataclass(frozen=True)
class MaskRuns:
    """Windows grouped by mask pattern: reps[u] is a window with pattern u; runs are (w0, w1, u) slices."""

    reps: tuple[int, ...]
    runs: tuple[tuple[int, int, int], ...]


def mask_runs(labels: torch.Tensor) -> MaskRuns:
    """Consecutive windows sharing one region pattern (a Swin layout has ~4 patterns: interior, edges, corner)."""
    _, inverse = torch.unique(labels.cpu(), dim=0, return_inverse=True)
    inv = inverse.tolist()
    reps = tuple(inv.index(u) for u in range(max(inv) + 1))
    runs: list[tuple[int, int, int]] = []
    start = 0
    for w in range(1, len(inv) + 1):
        if w == len(inv) or inv[w] != inv[start]:
            runs.append((start, w, inv[start]))
            start = w
    return MaskRuns(reps, tuple(runs))
