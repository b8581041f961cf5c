"""PnP-Nystra window attention (Kidambi & Nair 2025): a Nyström approximation of the unnormalised softmax kernel.

Paper mode (no bias, no mask), per window and head, with logits Λ = s·QKᵀ:
    landmarks  Q̃ = P(sQ), K̃ = P(K), P = segment means over the token grid (adaptive average pooling)
    kernels    G_L = f(sQ K̃ᵀ), G_U = f(Q̃ Kᵀ), G_A = f(Q̃ K̃ᵀ),  f_t(x) = exp(min(x, t)) + relu(x - t)
    inverse    Z ≈ G_A† by `iters` steps Z ← ¼Z(13I − G_A Z(15I − G_A Z(7I − G_A Z))), Z₀ = G_Aᵀ/(‖G_A‖₁‖G_A‖_∞)
    output     [N | D] = (G_L Z)(G_U [V, 1]),  O = N / (D + 1e-12)
with the research code's evaluation order, so results agree with it bit for bit on CPU.

Bias and mask (beyond the paper). Write P_q, P_k for the (m×N) averaging matrices, so Q̃ = P_q(sQ), K̃ = P_k K.
Because the logits are bilinear, the paper's landmark logits are pooled token logits: Q̃Kᵀ = P_q(sQKᵀ),
sQK̃ᵀ = (sQKᵀ)P_kᵀ, Q̃K̃ᵀ = P_q(sQKᵀ)P_kᵀ. With a relative-position bias the token logits are Λ = sQKᵀ + B, and
the same construction pools Λ instead: G_L = f(ΛP_kᵀ), G_U = f(P_qΛ), G_A = f(P_qΛP_kᵀ). The bias therefore enters
as B P_kᵀ (bias between a token and a landmark = bias averaged over the landmark's segment), P_q B and P_q B P_kᵀ;
with B = 0 this is exactly the paper.
A shift mask M (0 within a region, −100 across) makes the exact kernel exp(Λ + M) block-diagonal over regions up
to a relative e⁻¹⁰⁰ ≈ 4e-44, i.e. exact attention is independent attention inside each region. We keep that
structure exactly: every segment is split into its region pieces, each nonempty piece is a landmark of that region
(its mean pools only tokens of that region), and kernel entries between a token or landmark of one region and a
landmark of another are 0 (logit −∞; f_t(−∞) = 0). Then G_A is block-diagonal, the Newton iteration keeps
Z = p(G_AᵀG_A)G_Aᵀ block-diagonal, and Ĝ = G_L Z G_U is the direct sum of per-region Nyström approximations: no
landmark mixes regions and no weight crosses a region boundary, matching the mask's −100 to fp32 rounding. Padding
slots (windows with fewer pieces) are zero landmarks with all kernel entries 0; they stay exactly 0 in Z.

Numerics: the core runs in fp32 for fp16/bf16 inputs (f is unnormalised and G_U·1 sums N terms, which overflows
half precision), and the result is returned in the input dtype. Rows where the approximation broke down (denominator
not positive, or output beyond twice the largest |value|, see _guard_rows) are recomputed exactly when ``spec.guard``
is set.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections.abc import Iterator

import torch

from vsnystra.attention.check import checked
from vsnystra.attention.exact import exact_attention
from vsnystra.attention.grid import (
    RegionLandmarks,
    landmark_grid,
    pool_tokens,
    region_landmarks,
    token_grid,
)
from vsnystra.attention.masks import cached_region_landmarks
from vsnystra.attention.policy import nystrom_pays
from vsnystra.attention.specs import PnPNystra
from vsnystra.attention.terms import AwareTerms, build_terms, cached_terms
from vsnystra.attention.tracing import real_tensors, refuse_trace

_log = logging.getLogger(__name__)
_mask_warned = threading.Event()  # the non-region-mask warning is logged once per process, then at debug level
# Elements of one chunk's (rows × landmarks) kernel. One CPU thread: small, so the element-wise passes stay in
# cache. Several threads: larger, because every op is a parallel region and, when the cores are oversubscribed
# (vspipe runs frames in parallel), each region can cost a scheduler slice, so fewer ops win. GPUs: large, so few
# kernels launch and the guard synchronises rarely.
_CHUNK_ELEMENTS = {"cpu": 1 << 17}
_CHUNK_ELEMENTS_THREADED = 1 << 20
_CHUNK_ELEMENTS_GPU = 1 << 25


def kernel_(x: torch.Tensor, threshold: float | None, inplace: bool = True) -> torch.Tensor:
    """f_t(x) = exp(min(x, t)) + relu(x - t), overwriting x unless autograd needs it (t None: exp).

    Same rounding as the research code either way.
    """
    if not inplace:
        return x.exp() if threshold is None else torch.exp(x.clamp(max=threshold)) + torch.relu(x - threshold)
    if threshold is None:
        return x.exp_()
    y = x.clamp(max=threshold).exp_()
    return y.add_(x.sub_(threshold).relu_())


def iterative_pinv(x: torch.Tensor, iters: int, init: str) -> torch.Tensor:
    """Razavi et al. pseudo-inverse of a batch of square matrices; Z₀ scaled over the whole batch or per matrix."""
    ax = x.abs()
    if init == "batch":
        denom = ax.sum(dim=-1).max() * ax.sum(dim=-2).max()
    else:
        denom = ax.sum(dim=-1).amax(dim=-1, keepdim=True) * ax.sum(dim=-2).amax(dim=-1, keepdim=True)
        denom = denom.unsqueeze(-1)
    z = x.transpose(-2, -1) / denom.clamp_min(torch.finfo(x.dtype).tiny)
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device).unsqueeze(0)
    for _ in range(iters):
        xz = x @ z
        z = 0.25 * z @ (13 * eye - (xz @ (15 * eye - (xz @ (7 * eye - xz)))))
    return z


def _chunks(total: int, per_item: int, device: torch.device) -> Iterator[tuple[int, int]]:
    if device.type != "cpu":
        budget = _CHUNK_ELEMENTS_GPU
    elif torch.get_num_threads() > 1:
        budget = _CHUNK_ELEMENTS_THREADED
    else:
        budget = _CHUNK_ELEMENTS["cpu"]
    step = max(1, budget // max(per_item, 1))
    for s in range(0, total, step):
        yield s, min(total, s + step)


def _window_chunks(b: int, nw: int, per_item: int, device: torch.device) -> Iterator[tuple[int, int, int, int]]:
    """Batch slices [s, e) that never cross an image when per-window terms exist, with their window range."""
    if nw == 1:
        for s, e in _chunks(b, per_item, device):
            yield s, e, 0, 1
        return
    for bi in range(b):
        for w0, w1 in _chunks(nw, per_item, device):
            yield bi * nw + w0, bi * nw + w1, w0, w1


def _differentiable(*ts: torch.Tensor | None) -> bool:
    """Whether autograd records this call (then no in-place updates of saved tensors and no out= arguments)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


def _add(x: torch.Tensor, y: torch.Tensor, inplace: bool) -> torch.Tensor:
    return x.add_(y) if inplace else x + y


def _mul(x: torch.Tensor, y: torch.Tensor, inplace: bool) -> torch.Tensor:
    return x.mul_(y) if inplace else x * y


def _normalise_into(out: torch.Tensor, s: int, e: int, prod: torch.Tensor, inplace: bool) -> None:
    """out[s:e] = numerator / (denominator + 1e-12), the research code's normalisation."""
    if inplace:
        torch.div(prod[..., :-1], prod[..., -1:] + 1e-12, out=out[s:e])
    else:
        out[s:e] = prod[..., :-1] / (prod[..., -1:] + 1e-12)


def _dense(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x in dtype and contiguous, in one pass. q and k arrive as strided slices of the fused qkv projection; the
    landmark pooling and every chunk's matmul would each copy them otherwise."""
    if x.dtype == dtype and x.is_contiguous():
        return x
    return torch.empty(x.shape, dtype=dtype, device=x.device).copy_(x)


def _dense_scaled(q: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """q · scale in dtype, contiguous, in one pass (the research code scales q before pooling)."""
    if _differentiable(q):
        return q.to(dtype).mul(scale).contiguous()
    return torch.mul(q, scale, out=torch.empty(q.shape, dtype=dtype, device=q.device))


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class _ValuesWithOnes:
    """[V, 1] of one chunk of windows in the working dtype, in a buffer reused across chunks.

    Why: v arrives as a strided slice of the fused qkv projection; concatenating a ones column to it per chunk (or
    widening it whole in half precision) allocates fresh multi-MB buffers on every call, and on CPU their first touch
    (page faults) cost more than the arithmetic: ~35 ms of a 100 ms window-64 Uformer level in bf16. One chunk-sized
    buffer stays allocated and in cache. Values are the same element for element, so no bit of the output changes.
    """

    def __init__(self, v: torch.Tensor, dtype: torch.dtype, rows: int, inplace: bool) -> None:
        self.v, self.dtype, self.inplace = v, dtype, inplace
        if inplace:
            _, nh, n, dv = v.shape
            self.v1 = torch.empty(rows, nh, n, dv + 1, dtype=dtype, device=v.device)
            self.v1[..., dv] = 1

    def __call__(self, s: int, e: int) -> torch.Tensor:
        """[V, 1] of windows [s, e): one matmul gives numerator and denominator; in place it lives in the shared
        buffer until the next call."""
        if not self.inplace:
            return _with_ones(self.v[s:e].to(self.dtype))
        v1 = self.v1[: e - s]
        v1[..., :-1].copy_(self.v[s:e])
        return v1


def paper_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float, spec: PnPNystra, window: tuple[int, ...] | None
) -> torch.Tensor:
    """PnP-Nystra exactly as the research code computes it (no bias, no mask), chunk by chunk of windows."""
    bn, nh, n, _ = q.shape
    work = _work_dtype(q.dtype)
    grid = token_grid(n, window)
    lgrid = landmark_grid(grid, spec.landmarks)
    qs, k = _dense_scaled(q, scale, work), _dense(k, work)
    q_m = pool_tokens(qs, grid, lgrid)
    k_m = pool_tokens(k, grid, lgrid)
    inplace = not _differentiable(q, k, v)
    z = iterative_pinv(kernel_(q_m @ k_m.transpose(-2, -1), spec.threshold, inplace), spec.iters, spec.pinv_init)
    chunks = list(_chunks(bn, nh * n * q_m.shape[2], q.device))
    values = _ValuesWithOnes(v, work, max(e - s for s, e in chunks), inplace)
    out = torch.empty(v.shape, dtype=q.dtype, device=q.device)
    for s, e in chunks:
        v1 = values(s, e)
        kl = kernel_(qs[s:e] @ k_m[s:e].transpose(-2, -1), spec.threshold, inplace)
        ku = kernel_(q_m[s:e] @ k[s:e].transpose(-2, -1), spec.threshold, inplace)
        prod = (kl @ z[s:e]) @ (ku @ v1)
        # the research code's normalisation, straight into the output when no cast is needed
        dest = out[s:e] if inplace and out.dtype == work else None
        res = torch.div(prod[..., :-1], prod[..., -1:] + 1e-12, out=dest)
        if spec.guard:
            good = _rows_ok(res, prod[..., -1], v1[..., :-1])
            if isinstance(good, torch.Tensor):
                _guard_rows(res, good, qs[s:e], k[s:e], v1[..., :-1], None, None, 1)
        if dest is None:
            out[s:e] = res
    return out


@functools.lru_cache(maxsize=16)
def _plain_regions(grid: tuple[int, ...], lgrid: tuple[int, ...]) -> RegionLandmarks:
    """One region, plain segments: the layout used when only a bias is passed."""
    n = math.prod(grid)
    return region_landmarks(torch.zeros(1, n, dtype=torch.long), grid, lgrid)


def aware_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    spec: PnPNystra,
    window: tuple[int, ...] | None,
) -> torch.Tensor | None:
    """PnP-Nystra with the relative-position bias in the kernel and region-respecting landmarks (module docstring).

    Returns None when the mask is not a 0/−100 region mask (the caller then runs exact attention).
    """
    bn, nh, n, _ = q.shape
    work = _work_dtype(q.dtype)
    dev = q.device
    grid = token_grid(n, window)
    lgrid = landmark_grid(grid, spec.landmarks)
    nw = 1 if mask is None else mask.shape[0]
    if bn % nw:
        raise ValueError(f"attention: batch {bn} is not a multiple of the mask's {nw} windows")
    if mask is None:
        regions = _plain_regions(grid, lgrid)
    else:
        found = cached_region_landmarks(mask, grid, lgrid)
        if found is None:
            return None
        regions = found
    pieces = regions.index.shape[1]
    if pieces >= n:  # region pieces as many as tokens: Nyström cannot save anything
        return exact_attention(q, k, v, scale=scale, bias=bias, mask=mask)
    qs, k = _dense_scaled(q, scale, work), _dense(k, work)
    v = v.to(work)
    b = bn // nw

    q_m, k_m = _region_landmarks(qs, k, regions, grid, lgrid, nw)
    inplace = not _differentiable(q, k, v, bias)
    masked = mask is not None
    terms = cached_terms(bias, masked, regions, work, dev) if inplace else build_terms(bias, masked, regions, work, dev)
    z = _landmark_inverse(q_m @ k_m.transpose(-2, -1), terms, spec, nw, inplace)

    out, good = _buffers(v, spec.guard)
    for s, e, w0, w1 in _window_chunks(b, nw, nh * n * pieces, dev):
        kl = qs[s:e] @ k_m[s:e].transpose(-2, -1)
        ku = q_m[s:e] @ k[s:e].transpose(-2, -1)
        if terms.bias_l is not None and terms.bias_u is not None:
            kl = _add(kl, terms.window(terms.bias_l, w0, w1), inplace)
            ku = _add(ku, terms.window(terms.bias_u, w0, w1), inplace)
        kl = kernel_(kl, spec.threshold, inplace)
        ku = kernel_(ku, spec.threshold, inplace)
        if terms.keep_l is not None and terms.keep_u is not None:
            # zero across regions; multiplying after f avoids the slow exp(-inf) and denormal paths
            kl = _mul(kl, terms.window(terms.keep_l, w0, w1), inplace)
            ku = _mul(ku, terms.window(terms.keep_u, w0, w1), inplace)
        _chunk_output(out, good, s, e, kl @ z[s:e], ku, v, inplace, spec.guard)
    if spec.guard:
        _guard_rows(out, good, qs, k, v, bias, mask, nw)
    return out.to(q.dtype)


def _region_landmarks(
    qs: torch.Tensor,
    k: torch.Tensor,
    regions: RegionLandmarks,
    grid: tuple[int, ...],
    lgrid: tuple[int, ...],
    nw: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Landmarks of every window: plain segment means by pooling, split pieces from their pooling rows, a zero row
    for padding; (B·nW, nH, pieces, d) each for the scaled queries and the keys."""
    bn, nh, _, d = qs.shape
    q_all = pool_tokens(qs, grid, lgrid)
    k_all = pool_tokens(k, grid, lgrid)
    m = math.prod(lgrid)
    with real_tensors():  # the layout's values (a constant of an export, never of the graph)
        identity = regions.aligned and bool(torch.equal(regions.index, torch.arange(m).expand_as(regions.index)))
    if identity:
        return q_all, k_all
    dev = qs.device
    pieces = regions.index.shape[1]
    extra = regions.rows[regions.m :].to(device=dev, dtype=qs.dtype)
    q_all = torch.cat([q_all, extra @ qs], dim=2)
    k_all = torch.cat([k_all, extra @ k], dim=2)
    sel = regions.index.to(dev)[regions.inverse.to(dev)].view(1, nw, 1, pieces, 1)
    shape5 = (bn // nw, nw, nh, -1, d)
    q_m = torch.take_along_dim(q_all.view(shape5), sel, dim=3).view(bn, nh, pieces, -1)
    k_m = torch.take_along_dim(k_all.view(shape5), sel, dim=3).view(bn, nh, pieces, -1)
    return q_m, k_m


def _landmark_inverse(a: torch.Tensor, terms: AwareTerms, spec: PnPNystra, nw: int, inplace: bool) -> torch.Tensor:
    """Z ≈ G_A†: the landmark kernel (with its pooled bias, zero across regions) and its iterative pseudo-inverse."""
    bn, nh, pieces, _ = a.shape
    if terms.bias_a is not None or terms.keep_a is not None:
        a = a.view(bn // nw, nw, nh, pieces, pieces)
        if terms.bias_a is not None:
            a = _add(a, terms.window(terms.bias_a, 0, nw), inplace)
        a = kernel_(a, spec.threshold, inplace)
        if terms.keep_a is not None:
            a = _mul(a, terms.window(terms.keep_a, 0, nw), inplace)
        a = a.reshape(bn, nh, pieces, pieces)
    else:
        a = kernel_(a, spec.threshold, inplace)
    return iterative_pinv(a, spec.iters, spec.pinv_init)


def _buffers(v: torch.Tensor, guard: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and the guard's per-row verdicts (empty without the guard)."""
    bn, nh, n, dv = v.shape
    out = torch.empty(bn, nh, n, dv, dtype=v.dtype, device=v.device)
    good = torch.empty(bn, nh, n if guard else 0, dtype=torch.bool, device=v.device)
    return out, good


def _chunk_output(
    out: torch.Tensor,
    good: torch.Tensor,
    s: int,
    e: int,
    klz: torch.Tensor,
    ku: torch.Tensor,
    v: torch.Tensor,
    inplace: bool,
    guard: bool,
) -> None:
    """out[s:e] = (G_L Z)(G_U [V, 1]) normalised, and the guard's verdicts for those rows."""
    v1 = _with_ones(v[s:e])
    prod = klz @ (ku @ v1)
    _normalise_into(out, s, e, prod, inplace)
    if guard:
        good[s:e] = _rows_ok(out[s:e], prod[..., -1], v1[..., :-1])


def _with_ones(v: torch.Tensor) -> torch.Tensor:
    """[V, 1]: one matmul gives numerator and denominator (built per chunk, while the chunk is in cache)."""
    return torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)


def _rows_ok(out: torch.Tensor, den: torch.Tensor, v: torch.Tensor) -> torch.Tensor | bool:
    """Rows of one chunk where Nyström did not break down: denominator > 0 and |output| <= 2·max|v| (NaN fails).

    Exact attention is a convex combination of the value rows, so max_c |o_c| <= max_j,c |v_jc| in every window and
    head; milder errors are the method's ordinary error and stay as computed. ``out`` is a contiguous chunk and ``v``
    the value columns of the chunk's [V, 1] (rows of d + 1): reductions over them are ~10-50x faster than row-wise
    ones or a copy of the strided values, so the whole chunk is tested first and rows only when it fails.
    """
    vmax = v.abs().amax(dim=(-2, -1)).unsqueeze(-1)  # (chunk, nH, 1)
    lo, hi = out.aminmax()
    bound = 2 * vmax.min()
    if bool((den.min() > 0) & (hi <= bound) & (lo >= -bound)):
        return True
    row_max = out.abs().amax(-1)
    return (den > 0) & (row_max <= 2 * vmax)


def _guard_rows(
    out: torch.Tensor,
    good: torch.Tensor,
    qs: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    nw: int,
) -> None:
    """Recompute exactly the rows where the approximation broke down (``good`` false, see _rows_ok)."""
    if bool(good.all()):
        return
    ib, ih, ii = torch.nonzero(~good, as_tuple=True)
    step = max(1, (1 << 22) // (k.shape[2] * k.shape[3]))  # rows per gather: at most ~16 MB of keys
    for c in range(0, ib.numel(), step):
        sb, sh, si = ib[c : c + step], ih[c : c + step], ii[c : c + step]
        logits = torch.einsum("rd,rjd->rj", qs[sb, sh, si], k[sb, sh])
        if bias is not None:
            logits = logits + bias[sh, si].to(logits.dtype)
        if mask is not None:
            logits = logits + mask[sb % nw, si].to(logits.dtype)
        out[sb, sh, si] = torch.einsum("rj,rjd->rd", logits.softmax(-1), v[sb, sh])


def nystra_attention(
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
    """PnP-Nystra dispatch: exact fallback where Nyström cannot help, else the paper or the bias/mask-aware path."""
    refuse_trace()  # data-dependent (guards, mask analysis, cached layouts): never traced, never caching fakes
    n = q.shape[2]
    if spec.landmarks >= n or (spec.policy == "auto" and not nystrom_pays(n, spec.landmarks, q.shape[-1], q.device)):
        return exact_attention(q, k, v, scale=scale, bias=bias, mask=mask)
    if bias is None and mask is None:
        res = paper_attention(q, k, v, scale=scale, spec=spec, window=window)
        return checked(res, q, k, v, scale=scale, bias=bias, mask=mask, spec=spec, window=window)
    out = aware_attention(q, k, v, scale=scale, bias=bias, mask=mask, spec=spec, window=window)
    if out is None:
        _log.log(
            logging.DEBUG if _mask_warned.is_set() else logging.WARNING,
            "attention: PnPNystra needs a 0/-100 shifted-window mask (0 within a region, <= -30 across); this mask is "
            "not one, so exact attention ran instead (pass mask=None or a region mask to use PnP-Nystra)",
        )
        _mask_warned.set()
        return exact_attention(q, k, v, scale=scale, bias=bias, mask=mask)
    return checked(out, q, k, v, scale=scale, bias=bias, mask=mask, spec=spec, window=window)
