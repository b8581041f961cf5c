"""The attention seam: Exact/Naive agreement, PnP-Nystra against the research formulas, bias/mask awareness."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vsnystra.attention import Exact, Naive, PnPNystra, attention
from vsnystra.attention.grid import closest_square_factors, landmark_grid, mask_labels, segment_matrix
from vsnystra.attention.nystra import _guard_rows, _rows_ok, iterative_pinv, paper_attention
from vsnystra.attention.policy import nystrom_pays

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attention_inputs import relative_bias, shift_mask, shift_mask_3d, window_qkv


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def masked_case(ws: int = 16, heads: int = 2, d: int = 16, seed: int = 0, per_side: int = 2):
    h = w = per_side * ws
    q, k, v = window_qkv(h, w, ws, heads, d, shift=ws // 2, seed=seed)
    return q, k, v, relative_bias(ws, heads, torch.Generator().manual_seed(seed + 1)), shift_mask(h, w, ws, ws // 2)


# ---------------------------------------------------------------- Exact vs Naive


@pytest.mark.parametrize("per_side", [2, 5])  # 5: 25 windows, bias + mask added per mask pattern
@pytest.mark.parametrize("use_bias,use_mask", [(True, True), (True, False), (False, True), (False, False)])
def test_exact_matches_naive_fp32(use_bias: bool, use_mask: bool, per_side: int) -> None:
    q, k, v, bias, mask = masked_case(ws=8, heads=3, d=12, per_side=per_side)
    q = q.repeat(2, 1, 1, 1)  # two images: windows-major batches
    k, v = k.repeat(2, 1, 1, 1), v.repeat(2, 1, 1, 1)
    kw = {"bias": bias if use_bias else None, "mask": mask if use_mask else None}
    a = attention(q, k, v, scale=12**-0.5, spec=Exact(), **kw)
    b = attention(q, k, v, scale=12**-0.5, spec=Naive(), **kw)
    # the formula itself, written out once more with explicit windows
    logits = (q * 12**-0.5) @ k.transpose(-2, -1)
    if use_bias:
        logits = logits + bias
    if use_mask:
        logits = logits + mask.repeat(2, 1, 1).unsqueeze(1)
    ref = logits.softmax(-1) @ v
    assert (a - ref).abs().max() <= 2e-6 * ref.abs().max()
    assert (b - ref).abs().max() <= 2e-6 * ref.abs().max()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_exact_matches_naive_half(dtype: torch.dtype) -> None:
    q, k, v, bias, mask = masked_case(ws=8, heads=2, d=16)
    ref = attention(q, k, v, scale=0.25, bias=bias, mask=mask, spec=Naive())
    out = attention(q.to(dtype), k.to(dtype), v.to(dtype), scale=0.25, bias=bias, mask=mask)
    assert out.dtype == dtype
    assert rel(out, ref) < 2e-2


def test_inference_mode_and_fresh_masks() -> None:
    q, k, v, bias, mask = masked_case(ws=8, per_side=4)
    ref = attention(q, k, v, scale=0.25, bias=bias, mask=mask, spec=Naive())
    ref_pnp = attention(q, k, v, scale=0.25, bias=bias, mask=mask, spec=PnPNystra(16, 3, 0.0))
    with torch.inference_mode():
        for _ in range(2):  # a new (inference) mask tensor each call, as models that build masks on the fly do
            fresh = mask.clone()
            assert (attention(q, k, v, scale=0.25, bias=bias, mask=fresh) - ref).abs().max() <= 2e-6
            out = attention(q, k, v, scale=0.25, bias=bias.clone(), mask=fresh, spec=PnPNystra(16, 3, 0.0))
            assert torch.equal(out, ref_pnp)


def test_mask_analysis_runs_once_per_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    from vsnystra.attention import masks

    calls: list[int] = []
    real = masks.mask_labels

    def counting(m: torch.Tensor) -> torch.Tensor | None:
        calls.append(1)
        return real(m)

    monkeypatch.setattr(masks, "mask_labels", counting)
    q, k, v, bias, mask = masked_case(ws=8, per_side=3)
    spec = PnPNystra(16, 2, 0.0)
    for budget, fresh_hits in ((masks._BUDGET_BYTES, True), (0, False)):  # held (content match) / weakly held
        monkeypatch.setattr(masks, "_entries", type(masks._entries)())
        monkeypatch.setattr(masks, "_BUDGET_BYTES", budget)
        calls.clear()
        for s in (Exact(), spec, Exact(), spec):
            attention(q, k, v, scale=0.25, bias=bias, mask=mask, spec=s)
        assert len(calls) == 1
        attention(q, k, v, scale=0.25, bias=bias, mask=mask.clone(), spec=spec)
        assert len(calls) == (1 if fresh_hits else 2)


def test_mask_batch_mismatch_is_reported() -> None:
    q, k, v, _bias, mask = masked_case(ws=8)
    with pytest.raises(ValueError, match=r"attention: batch .* multiple"):
        attention(q[:3], k[:3], v[:3], scale=1.0, mask=mask)


# ---------------------------------------------------------------- research-code transcription


def research_pnp(q, k, v, scale, m, iters, t, hi, wi):
    """The research formulas transcribed independently: pooled landmarks, f_t, batch-global Newton pinv."""
    bn, nh, _n, d = q.shape
    q = q * scale
    h, w = next((i, m // i) for i in range(math.isqrt(m), 0, -1) if m % i == 0)

    def pool(x):
        grid = x.reshape(bn * nh, hi, wi, d).permute(0, 3, 1, 2)
        return F.adaptive_avg_pool2d(grid, (h, w)).permute(0, 2, 3, 1).reshape(bn, nh, m, d)

    def f(x):
        return torch.exp(x.clamp(max=t)) + torch.relu(x - t)

    qm, km = pool(q), pool(k)
    a = f(qm @ km.transpose(-2, -1))
    z = a.transpose(-1, -2) / (a.abs().sum(-1).max() * a.abs().sum(-2).max())
    eye = torch.eye(m).unsqueeze(0)
    for _ in range(iters):
        az = a @ z
        z = 0.25 * z @ (13 * eye - (az @ (15 * eye - (az @ (7 * eye - az)))))
    p = (f(q @ km.transpose(-2, -1)) @ z) @ (
        f(qm @ k.transpose(-2, -1)) @ torch.cat([v, torch.ones_like(v[..., :1])], -1)
    )
    return p[..., :-1] / (p[..., -1].unsqueeze(-1) + 1e-12)


@pytest.mark.parametrize(
    "n,m,iters,t",
    [(1024, 16, 2, 5.0), (512, 32, 6, 0.0), (256, 32, 3, 0.0)],  # SwinIR w32; RVRT-like flat 2x16x16; Uformer-ish
)
def test_paper_mode_is_bit_equal_to_research_code(n: int, m: int, iters: int, t: float) -> None:
    gen = torch.Generator().manual_seed(n + m)
    heads, d = 3, 16
    x = torch.randn(4, n, 24, generator=gen)
    x[1] *= 3.0  # windows of different scale: the batch-global Z0 matters
    qkv = (x @ (torch.randn(24, 3 * heads * d, generator=gen) / 4)).reshape(4, n, 3, heads, d).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # strided views, as the research code has them
    hi, wi = closest_square_factors(n)
    ref = research_pnp(q, k, v, d**-0.5, m, iters, t, hi, wi)
    out = attention(q, k, v, scale=d**-0.5, spec=PnPNystra(landmarks=m, iters=iters, threshold=t))
    assert torch.equal(out, ref)
    per_matrix = attention(q, k, v, scale=d**-0.5, spec=PnPNystra(m, iters, t, pinv_init="matrix"))
    assert not torch.allclose(per_matrix, ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- PnP-Nystra properties


def test_landmarks_at_least_tokens_is_exact() -> None:
    q, k, v, bias, mask = masked_case(ws=4)
    for kw in ({}, {"bias": bias, "mask": mask}):
        ref = attention(q, k, v, scale=0.25, **kw)
        assert torch.equal(attention(q, k, v, scale=0.25, spec=PnPNystra(landmarks=16), **kw), ref)
        assert torch.equal(attention(q, k, v, scale=0.25, spec=PnPNystra(landmarks=64), **kw), ref)


def test_error_falls_as_landmarks_grow() -> None:
    q, k, v = window_qkv(32, 32, 16, 2, 16, seed=3)
    ref = attention(q, k, v, scale=0.25)
    errs = [rel(attention(q, k, v, scale=0.25, spec=PnPNystra(m, 20, None, "matrix")), ref) for m in (16, 64, 128)]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.02


def test_pinv_converges_on_well_conditioned_matrices() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.eye(8) * 4 + torch.rand(5, 8, 8, generator=gen)
    x[2] *= 10.0
    inv = torch.linalg.inv(x.double()).float()
    for init in ("batch", "matrix"):
        z = iterative_pinv(x, 12, init)
        assert (z - inv).abs().max() <= 1e-4 * inv.abs().max()
    assert (iterative_pinv(x, 1, "batch") - inv).abs().max() > 1e-2 * inv.abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("masked", [False, True])
def test_large_logits_stay_finite(dtype: torch.dtype, masked: bool) -> None:
    q, k, v, bias, mask = masked_case(ws=16, heads=2, d=16)
    q = q / q.norm(dim=-1, keepdim=True) * 50 * 4  # |q·k|·scale up to ~50
    k = k / k.norm(dim=-1, keepdim=True)
    kw = {"bias": bias, "mask": mask} if masked else {}
    for spec in (Exact(), PnPNystra(16, 6, 5.0), PnPNystra(16, 6, None), PnPNystra(16, 2, 0.0, "matrix")):
        out = attention(q.to(dtype), k.to(dtype), v.to(dtype), scale=0.25, spec=spec, **kw)
        assert out.dtype == dtype
        assert torch.isfinite(out).all(), spec


def _blocky(grid: tuple[int, ...], m: int, d: int = 16):
    """q = k constant on each true-grid landmark segment, orthogonal across segments: the kernel has rank m."""
    lgrid = landmark_grid(grid, m)
    seg = segment_matrix(grid, lgrid).float()  # (m, N), disjoint here
    basis = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(1)))[0][:m] * 6.0
    qk = (seg.t() @ basis).view(1, 1, -1, d)
    v = torch.randn(1, 1, seg.shape[1], 8, generator=torch.Generator().manual_seed(2))
    return qk, v


@pytest.mark.parametrize("grid", [(8, 32), (2, 8, 16)])
def test_window_layout_defines_segments(grid: tuple[int, ...]) -> None:
    qk, v = _blocky(grid, 8)
    ref = attention(qk, qk, v, scale=0.25)
    spec = PnPNystra(8, 25, None, "matrix")
    assert rel(attention(qk, qk, v, scale=0.25, spec=spec, window=grid), ref) < 1e-4
    assert rel(attention(qk, qk, v, scale=0.25, spec=spec), ref) > 1e-2  # flat grid: segments mix
    with pytest.raises(ValueError, match="window"):
        attention(qk, qk, v, scale=0.25, spec=spec, window=(3, 3))


@pytest.mark.parametrize("stripe", [(24, 6), (6, 24)])
def test_stripe_landmarks_follow_the_stripe(stripe: tuple[int, int]) -> None:
    """ESWT-like stripes: q = k constant on 3x3 token blocks (16 blocks), orthogonal across blocks, so the kernel has
    rank 16 and Nyström is exact iff each landmark segment is one block. A 4x4 landmark grid (6x1.5 overlapping
    segments) mixes blocks."""
    h, w = stripe
    blocks = (torch.arange(h).div(3, rounding_mode="floor")[:, None] * (w // 3) + torch.arange(w) // 3).flatten()
    basis = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(1)))[0] * 6.0
    qk = basis[blocks].view(1, 1, h * w, 16)
    v = torch.randn(1, 1, h * w, 8, generator=torch.Generator().manual_seed(2))
    ref = attention(qk, qk, v, scale=0.25)
    out = attention(qk, qk, v, scale=0.25, spec=PnPNystra(16, 25, None, "matrix"), window=stripe)
    assert rel(out, ref) < 1e-4
    assert landmark_grid(stripe, 16) == (h // 3, w // 3)


def test_landmark_grids() -> None:
    assert [closest_square_factors(m) for m in (8, 16, 32, 64, 8192)] == [(2, 4), (4, 4), (4, 8), (8, 8), (64, 128)]
    assert landmark_grid((32, 32), 16) == (4, 4)
    assert landmark_grid((64, 16), 32) == (8, 4)
    assert landmark_grid((2, 64, 64), 32) == (2, 4, 4)
    assert landmark_grid((3, 64, 64), 32) == (1, 4, 8)
    assert [landmark_grid(g, 32) for g in ((48, 12), (12, 48), (8, 8))] == [(8, 4), (4, 8), (4, 8)]
    assert landmark_grid((4, 2), 8) == (4, 2)  # no more landmark rows than token rows


# ---------------------------------------------------------------- bias- and mask-aware path


def test_zero_bias_and_mask_equal_paper_path() -> None:
    q, k, v, _, mask = masked_case(ws=16, heads=2, d=16)
    spec = PnPNystra(16, 3, 5.0)
    paper = attention(q, k, v, scale=0.25, spec=spec)
    zb = torch.zeros(2, 256, 256)
    zm = torch.zeros_like(mask)
    for bias, mask_ in ((zb, None), (None, zm), (zb, zm)):
        out = attention(q, k, v, scale=0.25, spec=spec, bias=bias, mask=mask_)
        assert (out - paper).abs().max() <= 1e-6 * paper.abs().max(), (bias is None, mask_ is None)


def test_mask_regions_are_independent() -> None:
    q, k, v, bias, mask = masked_case(ws=16, heads=2, d=16)
    spec = PnPNystra(16, 6, 0.0)
    out = attention(q, k, v, scale=0.25, bias=bias, mask=mask, spec=spec)
    labels = mask_labels(mask)
    assert labels is not None
    w = 3  # the corner window: four regions
    assert labels[w].unique().numel() == 4
    other = labels[w] != labels[w, 0]
    v2 = v.clone()
    v2[w, :, other] += 10.0  # change values only outside token 0's region
    out2 = attention(q, k, v2, scale=0.25, bias=bias, mask=mask, spec=spec)
    inside = ~other
    assert (out2[w, :, inside] - out[w, :, inside]).abs().max() <= 1e-5 * out.abs().max()
    assert (out2[w, :, other] - out[w, :, other]).abs().max() > 1.0


def test_bias_and_mask_aware_beats_dropping_them() -> None:
    q, k, v, bias, mask = masked_case(ws=16, heads=2, d=16)
    ref = attention(q, k, v, scale=0.25, bias=bias, mask=mask)
    spec = PnPNystra(16, 6, None)
    aware = rel(attention(q, k, v, scale=0.25, bias=bias, mask=mask, spec=spec), ref)
    dropped = rel(paper_attention(q, k, v, scale=0.25, spec=spec, window=None), ref)
    assert aware < 0.5 * dropped
    # converged inverse and many landmarks: close to exact attention with bias and mask
    close = rel(attention(q, k, v, scale=0.25, bias=bias, mask=mask, spec=PnPNystra(128, 25, None, "matrix")), ref)
    assert close < 0.02


def test_shift_that_splits_segments() -> None:
    """Shift 3 in 8x8 windows cuts 2x2 landmark segments: split pieces become extra landmarks of their region."""
    from vsnystra.attention.masks import cached_region_landmarks

    ws = 8
    q, k, v = window_qkv(24, 24, ws, 2, 16, shift=3, seed=2)
    mask = shift_mask(24, 24, ws, 3)
    bias = relative_bias(ws, 2, torch.Generator().manual_seed(3))
    rl = cached_region_landmarks(mask, (8, 8), (4, 4))
    assert rl is not None and not rl.aligned and rl.index.shape[1] > 16
    ref = attention(q, k, v, scale=0.25, bias=bias, mask=mask)
    close = attention(q, k, v, scale=0.25, bias=bias, mask=mask, spec=PnPNystra(16, 25, None, "matrix"))
    dropped = paper_attention(q, k, v, scale=0.25, spec=PnPNystra(16, 25, None, "matrix"), window=None)
    assert rel(close, ref) < 0.05 < rel(dropped, ref)
    labels = mask_labels(mask)
    assert labels is not None
    w = 8  # corner window: four regions
    other = labels[w] != labels[w, 0]
    v2 = v.clone()
    v2[w, :, other] += 10.0
    spec = PnPNystra(16, 6, 0.0)
    o1 = attention(q, k, v, scale=0.25, bias=bias, mask=mask, spec=spec)
    o2 = attention(q, k, v2, scale=0.25, bias=bias, mask=mask, spec=spec)
    assert (o2[w, :, ~other] - o1[w, :, ~other]).abs().max() <= 1e-5 * o1.abs().max()


def test_3d_windows_with_mask_and_bias() -> None:
    """Video windows (t, h, w) = (2, 8, 8), shift (1, 4, 4): up to 8 regions, landmarks per frame and region."""
    grid, shift = (2, 8, 8), (1, 4, 4)
    mask = shift_mask_3d(4, 16, 16, grid, shift)  # 8 windows
    labels = mask_labels(mask)
    assert labels is not None and labels[-1].unique().numel() == 8
    gen = torch.Generator().manual_seed(5)
    n, heads, d = 128, 2, 16
    base = torch.randn(mask.shape[0], heads, 2, 2, 2, d, generator=gen)  # smooth over the 3-D grid
    smooth = torch.nn.functional.interpolate(base.flatten(0, 1).permute(0, 4, 1, 2, 3), size=grid, mode="trilinear")
    q, k, v = (smooth.permute(0, 2, 3, 4, 1).reshape(-1, heads, n, d) * s for s in (2.0, 1.0, 1.0))
    coords = torch.stack(torch.meshgrid(*(torch.arange(g) for g in grid), indexing="ij")).flatten(1).float()
    rel_pos = coords[:, :, None] - coords[:, None, :]  # (3, N, N): a smooth function of it, as a learned table is
    bias = torch.stack([-0.05 * (h + 1) * (rel_pos[1] ** 2 + rel_pos[2] ** 2) + 0.3 * rel_pos[0] for h in range(heads)])
    ref = attention(q, k, v, scale=0.25, bias=bias, mask=mask)
    out = attention(q, k, v, scale=0.25, bias=bias, mask=mask, spec=PnPNystra(32, 25, None, "matrix"), window=grid)
    assert torch.isfinite(out).all()
    dropped = paper_attention(q, k, v, scale=0.25, spec=PnPNystra(32, 25, None, "matrix"), window=grid)
    assert rel(out, ref) < 0.5 * rel(dropped, ref)
    # values outside token 0's region never reach it
    w = mask.shape[0] - 1
    other = labels[w] != labels[w, 0]
    v2 = v.clone()
    v2[w, :, other] -= 5.0
    out2 = attention(q, k, v2, scale=0.25, bias=bias, mask=mask, spec=PnPNystra(32, 6, 0.0), window=grid)
    out1 = attention(q, k, v, scale=0.25, bias=bias, mask=mask, spec=PnPNystra(32, 6, 0.0), window=grid)
    assert (out2[w, :, ~other] - out1[w, :, ~other]).abs().max() <= 1e-5 * out1.abs().max()


def test_images_in_one_batch_are_independent() -> None:
    q, k, v, bias, mask = masked_case(ws=8, per_side=3)
    spec = PnPNystra(16, 3, 0.0)
    one = attention(q, k, v, scale=0.25, bias=bias, mask=mask, spec=spec)
    two = attention(
        q.repeat(2, 1, 1, 1), k.repeat(2, 1, 1, 1), v.repeat(2, 1, 1, 1), scale=0.25, bias=bias, mask=mask, spec=spec
    )
    assert torch.equal(two[: q.shape[0]], one) and torch.equal(two[q.shape[0] :], one)


def test_autograd_through_pnp() -> None:
    q, k, v, bias, mask = masked_case(ws=8, per_side=3)
    for kw in ({}, {"bias": bias, "mask": mask}):
        spec = PnPNystra(16, 3, 5.0)
        ref = attention(q, k, v, scale=0.25, spec=spec, **kw)
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        extra = {name: t.clone().requires_grad_() if name == "bias" else t for name, t in kw.items()}
        out = attention(*leaves, scale=0.25, spec=spec, **extra)
        assert torch.equal(out.detach(), ref)
        out.square().sum().backward()
        grads = [t.grad for t in leaves] + ([extra["bias"].grad] if "bias" in extra else [])
        assert all(g is not None and torch.isfinite(g).all() and g.abs().max() > 0 for g in grads)


def test_non_region_mask_falls_back_to_exact() -> None:
    q, k, v, bias, mask = masked_case(ws=8)
    soft = mask.clone()
    soft[0, 0, 1] = -1.0  # not a 0/-100 region mask
    assert mask_labels(soft) is None
    ref = attention(q, k, v, scale=0.25, bias=bias, mask=soft)
    assert torch.equal(attention(q, k, v, scale=0.25, bias=bias, mask=soft, spec=PnPNystra(16)), ref)


def test_guard_recomputes_broken_rows_exactly() -> None:
    q, k, v, bias, mask = masked_case(ws=8)
    qs = q * 0.25
    exact = attention(q, k, v, scale=0.25, bias=bias, mask=mask)
    out = torch.zeros_like(exact)
    good = torch.ones(*exact.shape[:3], dtype=torch.bool)
    good[1, 0, 5] = False
    good[2, 1, 7] = False
    _guard_rows(out, good, qs, k, v, bias, mask, mask.shape[0])
    assert torch.allclose(out[1, 0, 5], exact[1, 0, 5], atol=1e-6)
    assert torch.allclose(out[2, 1, 7], exact[2, 1, 7], atol=1e-6)
    assert out[0].abs().max() == 0  # healthy rows untouched


def test_guard_flags_bad_denominators_and_outputs_beyond_the_value_bound() -> None:
    g = torch.Generator().manual_seed(0)
    v = torch.rand(3, 2, 16, 4, generator=g) - 0.5  # max|v| <= 0.5 per (window, head)
    out = (torch.rand(3, 2, 16, 4, generator=g) - 0.5) * 0.9
    den = torch.rand(3, 2, 16, generator=g) + 0.1
    assert _rows_ok(out, den, v) is True  # healthy chunk: the fast flat test passes
    vmax = v.abs().flatten(2).amax(-1)
    den[1, 0, 5] = -3.0
    den[2, 1, 7] = float("nan")
    out[0, 1, 3, 2] = 2.01 * float(vmax[0, 1])
    out[2, 0, 9, 0] = -2.01 * float(vmax[2, 0])
    out[1, 1, 0, 1] = 1.99 * float(vmax[1, 1])  # within the bound: the method's ordinary error, kept
    good = _rows_ok(out, den, v)
    assert isinstance(good, torch.Tensor)
    bad = {tuple(i) for i in torch.nonzero(~good).tolist()}
    assert bad == {(1, 0, 5), (2, 1, 7), (0, 1, 3), (2, 0, 9)}


def test_guard_end_to_end_on_sharp_logits() -> None:
    q, k, v = window_qkv(64, 64, 32, 2, 16, sharpness=4.0, seed=1)  # 6 iterations break down on some rows
    exact = attention(q, k, v, scale=0.25)
    raw = attention(q, k, v, scale=0.25, spec=PnPNystra(16, 6, None, guard=False))
    fixed = attention(q, k, v, scale=0.25, spec=PnPNystra(16, 6, None))
    changed = (raw != fixed).any(-1)
    assert 0 < int(changed.sum()) < changed.numel() // 20
    assert torch.allclose(fixed[changed], exact[changed], atol=1e-5)
    assert torch.equal(fixed[~changed], raw[~changed])
    assert rel(raw, exact) > 5.0 > 1.0 > rel(fixed, exact)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_paper_path_chunked_equals_one_chunk_bit_for_bit(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype) -> None:
    """The staged, chunked research-code path (reused [V, 1] buffer, output written in place) changes no bit."""
    from vsnystra.attention import nystra

    q, k, v = window_qkv(64, 64, 32, 2, 16, sharpness=4.0, seed=1, dtype=dtype)  # 4 windows, guard fires
    qs, ks, vs = (t[..., 1:] for t in (torch.cat([x[..., :1], x], -1) for x in (q, k, v)))  # strided, like qkv
    assert not vs.is_contiguous() and torch.equal(vs, v)
    spec = PnPNystra(16, 6, None)
    whole = paper_attention(qs, ks, vs, scale=0.25, spec=spec, window=None)
    monkeypatch.setattr(nystra, "_CHUNK_ELEMENTS", {"cpu": 1})
    monkeypatch.setattr(nystra, "_CHUNK_ELEMENTS_THREADED", 1)  # one window per chunk
    chunked = paper_attention(qs, ks, vs, scale=0.25, spec=spec, window=None)
    assert chunked.dtype == dtype and torch.equal(chunked, whole)
    raw = paper_attention(qs, ks, vs, scale=0.25, spec=PnPNystra(16, 6, None, guard=False), window=None)
    changed = (raw != chunked).any(-1)
    assert int(changed.sum()) > 0  # the guard ran inside the chunks
    exact = attention(q.float(), k.float(), v.float(), scale=0.25).to(dtype)
    assert rel(chunked.float(), exact.float()) < 1.0


# ---------------------------------------------------------------- policy and spec validation


def test_auto_policy() -> None:
    cpu = torch.device("cpu")
    assert not nystrom_pays(64, 16, 30, cpu)
    assert nystrom_pays(1024, 16, 30, cpu)
    assert nystrom_pays(4096, 32, 32, cpu)
    q, k, v, bias, mask = masked_case(ws=8)
    ref = attention(q, k, v, scale=0.25, bias=bias, mask=mask)
    auto = PnPNystra(16, policy="auto")
    assert torch.equal(attention(q, k, v, scale=0.25, bias=bias, mask=mask, spec=auto), ref)
    q, k, v = window_qkv(32, 32, 32, 1, 16)
    assert not torch.equal(attention(q, k, v, scale=0.25, spec=auto), attention(q, k, v, scale=0.25))


@pytest.mark.parametrize(
    "kwargs,exc",
    [
        ({"landmarks": 0}, ValueError),
        ({"iters": -1}, ValueError),
        ({"landmarks": 2.5}, TypeError),
        ({"threshold": float("nan")}, ValueError),
        ({"pinv_init": "global"}, ValueError),
        ({"policy": "sometimes"}, ValueError),
    ],
)
def test_spec_validation(kwargs: dict, exc: type) -> None:
    with pytest.raises(exc, match="PnPNystra"):
        PnPNystra(**kwargs)


def test_unknown_spec_and_bad_shapes() -> None:
    q = torch.zeros(2, 1, 4, 8)
    with pytest.raises(TypeError, match="attention"):
        attention(q, q, q, scale=1.0, spec="exact")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attention"):
        attention(q, q[:, :, :3], q, scale=1.0)


# ---------------------------------------------------------------- CUDA


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(dtype: torch.dtype) -> None:
    q, k, v, bias, mask = masked_case(ws=16, heads=2, d=16, per_side=3)
    dev = torch.device("cuda")
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    for spec in (Exact(), PnPNystra(16, 3, 5.0), PnPNystra(16, 6, 0.0, "matrix")):
        for kw in ({}, {"bias": bias, "mask": mask}):
            ref = attention(q, k, v, scale=0.25, spec=spec, **kw)
            gkw = {name: t.to(dev) for name, t in kw.items()}
            out = attention(q.to(dev, dtype), k.to(dev, dtype), v.to(dev, dtype), scale=0.25, spec=spec, **gkw)
            assert out.dtype == dtype and out.device.type == "cuda"
            assert torch.isfinite(out).all()
            assert rel(out.cpu(), ref) < tol, (spec, list(kw))
