"""Per-window kernel terms of the bias/mask-aware PnP-Nystra path, cached per (bias, mask) pair.

For every distinct mask pattern u (a model has a handful: interior, edge and corner windows) this holds the pooled
relative-position bias between tokens and landmarks (B P_kᵀ, P_q B, P_q B P_kᵀ, see nystra.py) and the 0/1
"same region" masks that zero kernel entries across regions. Models pass the same cached bias and mask tensors on
every call, so the O(nH·N²·m) pooling runs once per block and size, not once per call.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vsnystra.attention.grid import RegionLandmarks
from vsnystra.attention.tracing import real_tensors, tracing
from vsnystra.lru import LRU

_CACHE_SIZE = 64


@dataclass(frozen=True)
class AwareTerms:
    """Additive bias terms (None without bias) and region keep-masks (None without mask), indexed by pattern."""

    bias_l: torch.Tensor | None  # (U, nH, N, m')
    bias_u: torch.Tensor | None  # (U, nH, m', N)
    bias_a: torch.Tensor | None  # (U, nH, m', m')
    keep_l: torch.Tensor | None  # (U, 1, N, m') 1.0 where token and landmark share a region, else 0.0
    keep_u: torch.Tensor | None  # (U, 1, m', N) the same, transposed (contiguous)
    keep_a: torch.Tensor | None  # (U, 1, m', m') 1.0 where two real landmarks share a region
    inverse: tuple[int, ...]  # pattern of each window

    def window(self, t: torch.Tensor, w0: int, w1: int) -> torch.Tensor:
        """The term for windows w0..w1-1 (a view whenever one pattern covers them)."""
        if t.shape[0] == 1:
            return t[0]
        first = self.inverse[w0]
        if all(u == first for u in self.inverse[w0:w1]):
            return t[first]
        return t[list(self.inverse[w0:w1])]


def _version(t: torch.Tensor) -> int:
    return -1 if t.is_inference() else t._version


def build_terms(
    bias: torch.Tensor | None, masked: bool, regions: RegionLandmarks, dtype: torch.dtype, device: torch.device
) -> AwareTerms:
    """Pool the bias over landmark pieces (one GEMM each way) and build the region keep-masks."""
    index = regions.index.to(device)
    bias_l = bias_u = bias_a = None
    if bias is not None:
        b = bias.to(device=device, dtype=dtype)
        rows = regions.rows.to(device=device, dtype=dtype)  # (Q, N) averaging rows, last one all zero
        b_l = b @ rows.t()  # (nH, N, Q)
        b_u = rows @ b  # (nH, Q, N)
        b_a = rows @ b_l  # (nH, Q, Q)
        bias_l = torch.stack([b_l[:, :, ix] for ix in index]).contiguous()
        bias_u = torch.stack([b_u[:, ix, :] for ix in index]).contiguous()
        bias_a = torch.stack([b_a[:, ix][:, :, ix] for ix in index]).contiguous()
    keep_l = keep_u = keep_a = None
    if masked:
        lab = regions.labels.to(device)
        reg = regions.region.to(device)
        keep_l = (lab.unsqueeze(2) == reg.unsqueeze(1)).unsqueeze(1).to(dtype)
        keep_u = keep_l.transpose(-2, -1).contiguous()
        keep_a = ((reg.unsqueeze(2) == reg.unsqueeze(1)) & (reg >= 0).unsqueeze(2)).unsqueeze(1).to(dtype)
    with real_tensors():  # the layout's values (a constant of an export)
        inverse = tuple(int(u) for u in regions.inverse)
    return AwareTerms(bias_l, bias_u, bias_a, keep_l, keep_u, keep_a, inverse)


_Cached = tuple[Callable[[], object], Callable[[], object], int, AwareTerms]  # (bias ref, layout ref, version, terms)
_cache: LRU[tuple[object, ...], _Cached] = LRU(_CACHE_SIZE)


def cached_terms(
    bias: torch.Tensor | None, masked: bool, regions: RegionLandmarks, dtype: torch.dtype, device: torch.device
) -> AwareTerms:
    """build_terms, reused while the same bias tensor (unmodified) meets the same region layout."""
    if tracing():  # a traced bias is a fake tensor: build in the graph, never cache it
        return build_terms(bias, masked, regions, dtype, device)
    key = (id(bias), id(regions), masked, dtype, device)
    hit = _cache.get(key)
    version = -1 if bias is None else _version(bias)
    if hit is not None and hit[0]() is bias and hit[1]() is regions and hit[2] == version:
        return hit[3]
    terms = build_terms(bias, masked, regions, dtype, device)
    alive: Callable[[], object] = (lambda: None) if bias is None else weakref.ref(bias)
    _cache.put(key, (alive, weakref.ref(regions), version, terms))
    return terms
