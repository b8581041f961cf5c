"""PnP-Nystra under torch.export: the maths of :mod:`vsnystra.attention.nystra`, out of place, in one chunk.

Why a separate path: the eager one picks chunk sizes, writes into reused buffers and recomputes broken-down rows
found by reading values (the guard). In a trace the architectures attach the real values to the shift masks
they build in the graph (``tracing.with_real_twin``), so the region analysis and landmark layout of a mask are
computed once, at the fixed shape, outside the graph; the graph holds only pooling, GEMMs, the kernel and the
pseudo-inverse. The guard becomes a select between the Nyström rows and exact rows computed for every row (so an
exported guarded PnP-Nystra costs more than exact attention; export with guard=False for the Nyström cost alone);
``max_error`` samples rows per call and is refused.
"""

from __future__ import annotations

import torch

from vsnystra.attention.exact import exact_attention
from vsnystra.attention.grid import landmark_grid, pool_tokens, token_grid
from vsnystra.attention.masks import cached_region_landmarks
from vsnystra.attention.nystra import _landmark_inverse, _plain_regions, _region_landmarks, iterative_pinv, kernel_
from vsnystra.attention.policy import nystrom_pays
from vsnystra.attention.specs import PnPNystra
from vsnystra.attention.terms import build_terms
from vsnystra.attention.tracing import real_tensors, real_values, refuse_trace

MAX_ERROR_MESSAGE = (
    "attention: PnPNystra(max_error=...) checks each call's error on its values and cannot be exported; "
    "export with max_error=None"
)


def _output(
    kl: torch.Tensor, z: torch.Tensor, ku: torch.Tensor, v: torch.Tensor, guard: torch.Tensor | None
) -> torch.Tensor:
    """(G_L Z)(G_U [V, 1]) with the research code's normalisation; with ``guard`` (the exact output), rows where
    the approximation broke down (denominator not positive, or beyond twice the largest |value| of the window and
    head: ``nystra._rows_ok``) take the exact rows, as the eager guard recomputes them."""
    prod = (kl @ z) @ (ku @ torch.cat([v, torch.ones_like(v[..., :1])], dim=-1))
    den = prod[..., -1:]
    out = prod[..., :-1] / (den + 1e-12)
    if guard is None:
        return out
    vmax = v.abs().amax(dim=(-2, -1), keepdim=True)
    good = (den > 0) & (out.abs().amax(dim=-1, keepdim=True) <= 2 * vmax)
    return torch.where(good, out, guard.to(out.dtype))


def traced_nystra_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    spec: PnPNystra,
    window: tuple[int, ...] | None,
) -> torch.Tensor:
    """Same contract as ``nystra_attention``; ``mask`` must be a real tensor (a constant of the trace)."""
    if spec.max_error is not None:
        raise NotImplementedError(MAX_ERROR_MESSAGE)
    real_mask = None if mask is None else real_values(mask)
    if real_mask is not None:
        refuse_trace(real_mask)  # a mask computed in the graph without real values cannot be analysed
    bn, nh, n, _ = q.shape
    if spec.landmarks >= n or (spec.policy == "auto" and not nystrom_pays(n, spec.landmarks, q.shape[-1], q.device)):
        return exact_attention(q, k, v, scale=scale, bias=bias, mask=mask)
    work = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    grid = token_grid(n, window)
    lgrid = landmark_grid(grid, spec.landmarks)
    qs, kw, vw = q.to(work) * scale, k.to(work), v.to(work)
    th = spec.threshold
    if bias is None and mask is None:
        q_m, k_m = pool_tokens(qs, grid, lgrid), pool_tokens(kw, grid, lgrid)
        z = iterative_pinv(kernel_(q_m @ k_m.transpose(-2, -1), th, False), spec.iters, spec.pinv_init)
        kl = kernel_(qs @ k_m.transpose(-2, -1), th, False)
        ku = kernel_(q_m @ kw.transpose(-2, -1), th, False)
        guard = exact_attention(q, k, v, scale=scale) if spec.guard else None
        return _output(kl, z, ku, vw, guard).to(q.dtype)
    nw = 1 if mask is None else mask.shape[0]
    with real_tensors():  # the mask's analysis: real values, cached like an eager one
        regions = _plain_regions(grid, lgrid) if real_mask is None else cached_region_landmarks(real_mask, grid, lgrid)
    if regions is None or regions.index.shape[1] >= n:  # not a region mask, or Nyström cannot save anything
        return exact_attention(q, k, v, scale=scale, bias=bias, mask=mask)
    q_m, k_m = _region_landmarks(qs, kw, regions, grid, lgrid, nw)
    terms = build_terms(bias, mask is not None, regions, work, q.device)
    z = _landmark_inverse(q_m @ k_m.transpose(-2, -1), terms, spec, nw, False)
    per_window = (bn // nw, nw, nh, n, -1)
    kl = (qs @ k_m.transpose(-2, -1)).view(per_window)
    ku = (q_m @ kw.transpose(-2, -1)).view(bn // nw, nw, nh, -1, n)
    if terms.bias_l is not None and terms.bias_u is not None:
        kl = kl + terms.window(terms.bias_l, 0, nw)
        ku = ku + terms.window(terms.bias_u, 0, nw)
    kl, ku = kernel_(kl, th, False), kernel_(ku, th, False)
    if terms.keep_l is not None and terms.keep_u is not None:
        kl = kl * terms.window(terms.keep_l, 0, nw)
        ku = ku * terms.window(terms.keep_u, 0, nw)
    guard = exact_attention(q, k, v, scale=scale, bias=bias, mask=mask) if spec.guard else None
    return _output(kl.reshape(bn, nh, n, -1), z, ku.reshape(bn, nh, -1, n), vw, guard).to(q.dtype)
