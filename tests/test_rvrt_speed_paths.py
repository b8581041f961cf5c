"""RVRT's CPU fast paths compute the same function as the straightforward formulations they replace.

FrameConv3d (Conv2d over frames) vs nn.Conv3d, the embedding_bag GDA vs the grid_sample GDA, the channels-last
Upsample4 vs its layers run one by one; plus a structural guard that no slow_conv3d runs in an RVRT forward.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vsnystra.archs import rvrt_gda
from vsnystra.archs.layers import FrameConv3d
from vsnystra.archs.rvrt import RVRT
from vsnystra.archs.rvrt_blocks import Upsample4
from vsnystra.archs.rvrt_gda import GuidedDeformAttnPack, deform_attn


@pytest.mark.parametrize(
    ("cin", "cout", "kernel", "stride", "padding", "groups"),
    [
        (8, 6, (1, 3, 3), (1, 1, 1), (0, 1, 1), 1),
        (12, 6, (1, 3, 3), (1, 1, 1), (0, 1, 1), 3),
        (4, 6, (1, 3, 3), (1, 2, 2), (0, 1, 1), 1),
        (8, 5, (1, 1, 1), (1, 1, 1), (0, 0, 0), 1),
        (4, 3, (3, 3, 3), (1, 1, 1), (1, 1, 1), 1),  # temporal kernel > 1: falls back to Conv3d
    ],
)
def test_frame_conv_equals_conv3d_and_backpropagates(
    cin: int,
    cout: int,
    kernel: tuple[int, int, int],
    stride: tuple[int, int, int],
    padding: tuple[int, int, int],
    groups: int,
) -> None:
    torch.manual_seed(0)
    ref = nn.Conv3d(cin, cout, kernel, stride, padding, groups=groups).double()
    ours = FrameConv3d(cin, cout, kernel, stride, padding, groups=groups).double()
    ours.load_state_dict(ref.state_dict())  # same parameter names and shapes
    x = torch.randn(2, 3, cin, 9, 10, dtype=torch.float64).transpose(1, 2)  # (n, c, t, h, w) view, as in RVRT
    x.requires_grad_(True)
    y_ref, y = ref(x), ours(x)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    g = torch.randn_like(y_ref)
    (gx_ref, gw_ref) = torch.autograd.grad(y_ref, (x, ref.weight), g)
    (gx, gw) = torch.autograd.grad(y, (x, ours.weight), g)
    torch.testing.assert_close(gx, gx_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(gw, gw_ref, rtol=0, atol=1e-12)


def _gda_inputs(
    b: int, clip: int, cq: int, h: int, w: int, groups: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b * clip, cq, h, w, generator=g, dtype=torch.float64)
    kv = torch.randn(b, clip, 2 * cq, h, w, generator=g, dtype=torch.float64)
    offset = 3 * torch.randn(b * clip, clip * groups * 9 * 2, h, w, generator=g, dtype=torch.float64)
    offset[:, :6] += 2 * max(h, w)  # far outside: every corner is zero
    offset[:, 6, 0, :] = -1.0  # exactly on the border row
    offset[:, 7, :, 0] = float(w - 1)
    return q, kv, offset


@pytest.mark.parametrize(
    ("b", "clip", "cq", "h", "w", "heads", "groups"),
    [
        (1, 2, 48, 7, 9, 12, 12),  # official ratios: a value group holds two heads
        (2, 2, 24, 5, 6, 3, 6),  # one head spans several groups
        (1, 3, 16, 6, 5, 4, 2),  # clip 3, one key group, heads inside it
    ],
)
@pytest.mark.parametrize("max_elems", [1 << 26, 1])  # one chunk, and one pixel per chunk
def test_gather_gda_equals_grid_gda(
    b: int, clip: int, cq: int, h: int, w: int, heads: int, groups: int, max_elems: int
) -> None:
    q, kv, offset = _gda_inputs(b, clip, cq, h, w, groups, seed=b + clip + cq)
    ref = rvrt_gda._deform_attn_grid(q, kv, offset, heads, groups, clip, (3, 3), 1 << 26)
    got = deform_attn(q, kv, offset, heads=heads, groups=groups, clip=clip, max_elems=max_elems)
    assert got.shape == ref.shape
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)


def test_gather_gda_channels_last_in_and_out() -> None:
    """Channels-last views in, channels-last view out: what GuidedDeformAttnPack relies on to avoid copies."""
    q, kv, offset = _gda_inputs(1, 2, 48, 6, 8, 12, seed=5)
    ref = deform_attn(q, kv, offset, heads=12, groups=12, clip=2)
    q_cl = q.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    kv_cl = kv.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    got = deform_attn(q_cl, kv_cl, offset, heads=12, groups=12, clip=2)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    assert got.permute(0, 2, 3, 1).is_contiguous()


def test_odd_groups_use_the_grid_path() -> None:
    """Keys and values share a group when the group count is odd: the gather path does not apply, results agree."""
    q, kv, offset = _gda_inputs(1, 2, 12, 5, 6, 3, seed=7)
    ref = rvrt_gda._deform_attn_grid(q, kv, offset, 3, 3, 2, (3, 3), 1 << 26)
    got = deform_attn(q, kv, offset, heads=3, groups=3, clip=2)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_gda_module_matches_differentiable_swap_and_trains() -> None:
    """GuidedDeformAttnPack with the inference op equals the training op swapped in, and gradients reach the convs."""
    from vsnystra.archs.rvrt_gda import differentiable_gda

    torch.manual_seed(0)
    c, h, w = 24, 6, 7
    mod = GuidedDeformAttnPack(c, clip=2, groups=12, heads=12).double()
    feats = [torch.randn(1, 2, c, h, w, dtype=torch.float64) for _ in range(5)]
    flows = [torch.randn(1, 2, 2, h, w, dtype=torch.float64) for _ in range(2)]
    with torch.no_grad():
        y, f1, f2 = mod(feats[0], feats[1], feats[2], feats[3:], flows, True)
    with differentiable_gda():
        y2, f1b, f2b = mod(feats[0], feats[1], feats[2], feats[3:], flows, True)
    torch.testing.assert_close(y2, y, rtol=0, atol=1e-10)
    assert f1 is not None and f1b is not None and f2 is not None and f2b is not None
    torch.testing.assert_close(f1b, f1, rtol=0, atol=0)
    torch.testing.assert_close(f2b, f2, rtol=0, atol=0)
    y2.square().sum().backward()
    grad = next(m for m in mod.conv_offset if isinstance(m, FrameConv3d)).weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_upsample_equals_its_layers() -> None:
    torch.manual_seed(0)
    up = Upsample4(8).double()
    x = torch.randn(1, 8, 2, 5, 6, dtype=torch.float64)
    ref = x
    for layer in up:  # the Sequential's layers one by one (Conv3d semantics via F.conv3d)
        if isinstance(layer, FrameConv3d):
            ref = F.conv3d(ref, layer.weight, layer.bias, padding=layer.padding)
        else:
            ref = layer(ref.clone())
    got = up(x)
    assert got.shape == (1, 8, 2, 20, 24)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)


def test_rvrt_forward_runs_no_slow_conv3d() -> None:
    """Structural guard: every (1, k, k) convolution of RVRT goes through Conv2d (no aten::slow_conv3d_forward)."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    net = RVRT(
        upscale=1,
        embed_dims=(24, 24, 24),
        num_heads=(2, 2, 2),
        inputconv_groups=(1, 3, 4, 6, 8, 4),
        nonblind_denoising=True,
        deformable_groups=4,
        attention_heads=4,
    ).eval()
    x = torch.rand(1, 4, 4, 136, 136)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        y = net(x)
    assert y.shape == (1, 4, 3, 136, 136)
    names = {e.key for e in prof.key_averages()}
    assert "aten::slow_conv3d_forward" not in names
    assert "aten::_embedding_bag_forward_only" in names or "aten::_embedding_bag" in names  # the gather GDA ran


@pytest.mark.parametrize(("b", "ss"), [(1, (1, 4, 4)), (2, (0, 4, 3)), (1, (0, 0, 32))])
def test_token_order_is_roll_then_partition(b: int, ss: tuple[int, int, int]) -> None:
    """The fused shift + window partition gather equals torch.roll + window_partition, and its inverse undoes it."""
    from vsnystra.archs.rvrt_blocks import token_order, window_partition, window_reverse

    d, h, w, c = 2, 16, 64 if ss[2] == 32 else 24, 3
    ws = (2, 8, 64) if ss[2] == 32 else (2, 8, 8)
    x = torch.randn(b, d, h, w, c)
    forward, inverse = token_order(b, d, h, w, ws, ss, x.device)
    rolled = torch.roll(x, shifts=(-ss[0], -ss[1], -ss[2]), dims=(1, 2, 3))
    ref = window_partition(rolled, ws)
    got = x.reshape(-1, c).index_select(0, forward).view_as(ref)
    assert torch.equal(got, ref)
    back = torch.roll(window_reverse(ref, ws, b, d, h, w), shifts=ss, dims=(1, 2, 3))
    assert torch.equal(ref.reshape(-1, c).index_select(0, inverse).view_as(x), back)
    assert torch.equal(back, x)


def test_gda_picks_its_differentiable_path_itself() -> None:
    """Without any context, inputs that require grad take the differentiable formulation (nothing is swapped)."""
    torch.manual_seed(1)
    c, h, w = 24, 5, 6
    mod = GuidedDeformAttnPack(c, clip=2, groups=12, heads=12).double()
    feats = [torch.randn(1, 2, c, h, w, dtype=torch.float64) for _ in range(5)]
    flows = [torch.randn(1, 2, 2, h, w, dtype=torch.float64) for _ in range(2)]
    op = rvrt_gda.deform_attn
    with torch.no_grad():
        ref, _, _ = mod(feats[0], feats[1], feats[2], feats[3:], flows, False)
    y, _, _ = mod(feats[0], feats[1], feats[2], feats[3:], flows, False)  # parameters require grad
    assert rvrt_gda.deform_attn is op
    torch.testing.assert_close(y.detach(), ref, rtol=0, atol=1e-10)
    y.square().sum().backward()
    grad = next(m for m in mod.conv_offset if isinstance(m, FrameConv3d)).weight.grad
    assert grad is not None and grad.abs().sum() > 0
