"""A start point from which the compact RVRT denoiser learns to use time.

Why the first release ignored time: its start point (``rvrt_init``) let the reconstruction read the shallow,
single-frame features only; the four propagation branches (guided deformable alignment + backbone, the only place
where frames meet) were randomly initialised and entered the reconstruction through zero weights. The branches
therefore carried arbitrary projections of misaligned neighbours (zero flow on high-motion clips), the gradient
on their reconstruction weights was weak and noisy, and after 2,741 steps those weights had norm 0.24-0.39 against
7.1 for the shallow path: the same output whether the noise in neighbouring frames was fresh or repeated.

``temporal_start`` rewires a (trained or fresh) denoiser so that, without changing its output, every branch is a
working temporal path:
- each alignment module samples the previous clip at the same position (every tap's offset points at the
  centre, the query projection is zero so the attention is uniform over the clip's frames, the value and output
  projections are identities): it returns the previous clip's branch features averaged over its frames;
- each backbone starts as ``new = aligned + (last input - aligned)``, i.e. it passes its freshest input on and
  gives the aligned past a weight of exactly zero, through LayerNorms kept linear by a +-A anchor pattern and
  residual transformer blocks that start as the identity;
- the reconstruction reads the branches with the opposite sign of the shallow features (``_share_reconstruction``),
  so that, while every branch still carries the shallow features, the sum is what it was; a branch that blends in
  the past then moves the output by (past - present), which is how a residual denoiser uses a temporal estimate.
So the first gradient on the backbones' "aligned" weights is the direct answer to "would mixing in the aligned
past lower the loss here?", instead of a signal that has to pass through zero weights and random features.
Requires ungrouped input convolutions in the backbones and the reconstruction (``inputconv_groups[1:] == 1``)
and equal embedding widths.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

ANCHOR = 3.0  # same anchor as rvrt_init: keeps the LayerNorms ~linear for features of std ~0.2
CONTRAST = 1.0  # k: how strongly a branch's departure from the present enters the reconstruction
BRANCHES = ("backward_1", "forward_1", "backward_2", "forward_2")


def supports_temporal_start(model: nn.Module) -> bool:
    """Whether the rewiring applies: denoising RVRT, equal widths, ungrouped backbone/reconstruction input convs."""
    m: Any = model
    if not getattr(m, "nonblind_denoising", False) or not hasattr(m, "deform_align"):
        return False
    c0 = int(m.reconstruction.main[1].weight.shape[1]) // 5
    convs = [m.backbone[name].main[1] for name in BRANCHES] + [m.reconstruction.main[1]]
    return all(int(c.groups) == 1 for c in convs) and int(m.backbone["backward_1"].main[1].weight.shape[0]) == c0


def _pattern(channels: int) -> torch.Tensor:
    return torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(channels)])


def _centre_offsets(gda: Any) -> None:
    """Every tap of every group and slot samples the centre: offset (1 - ky, 1 - kx) in pixels, flow added."""
    last = gda.conv_offset[-1]
    kh, kw = gda.kernel
    taps = kh * kw
    last.weight.zero_()
    bias = torch.empty(gda.clip, gda.groups, taps, 2)
    for tap in range(taps):
        ky, kx = divmod(tap, kw)
        bias[:, :, tap, 0] = math.atanh((kh // 2 - ky) / gda.max_residue_magnitude)
        bias[:, :, tap, 1] = math.atanh((kw // 2 - kx) / gda.max_residue_magnitude)
    last.bias.copy_(bias.flatten())


def _mean_of_previous_clip(gda: Any) -> None:
    """Uniform attention (zero queries) over centred samples, identity value and output projections, no MLP."""
    c = gda.channels
    _centre_offsets(gda)
    q, v, out = gda.proj_q[1], gda.proj_v[1], gda.proj[1]
    q.weight.zero_()
    q.bias.zero_()
    v.weight.zero_()
    v.bias.zero_()
    v.weight[:c, :c] = torch.eye(c)
    out.weight.zero_()
    out.bias.zero_()
    out.weight[:, :c] = torch.eye(c)
    fc2 = gda.mlp[1].fc2
    fc2.weight.zero_()
    fc2.bias.zero_()


def _pass_freshest(backbone: Any, branch_index: int, c: int, anchor: float) -> None:
    """Backbone = (last part) - (aligned) through anchored-linear LayerNorms; residual blocks start as identity."""
    main = backbone.main
    conv = main[1]
    p = _pattern(c)
    conv.weight.zero_()
    last = slice(branch_index * c, (branch_index + 1) * c)  # parts = shallow, b1, f1, b2 (first 1 + i of them)
    aligned = slice((branch_index + 1) * c, (branch_index + 2) * c)
    eye = torch.eye(c)
    conv.weight[:, last, 0, 1, 1] = eye
    conv.weight[:, aligned, 0, 1, 1] = -eye
    conv.bias.copy_(anchor * p)
    main[3].weight.fill_(anchor)
    main[3].bias.zero_()
    for rstb in main[5].children():
        rstb.linear.weight.zero_()
        rstb.linear.bias.zero_()
    main[7].weight.fill_(anchor)
    main[7].bias.copy_(-anchor * p)


def _share_reconstruction(model: Any, c: int, contrast: float) -> None:
    """Shallow slot ``(1 + k) W_s - k W_s P``, each branch ``-(k / 4) W_s``: the same output while the branches carry
    the shallow features, and a blended branch then enters as *the past minus the present*.

    The output is the noisy frame plus a residual decoded from these features, so the residual must keep seeing
    the current frame's noise to remove it: averaged features fed in with the shallow features' sign would
    replace that noise instead of cancelling it (measured: feeding time-averaged shallow features to every slot
    drops a static fresh-noise clip from 29.4 to 22.7 dB). ``P`` (the channel mean) keeps what LayerNorm'd
    branches cannot carry on the shallow slot.
    """
    w = model.reconstruction.main[1].weight  # (out, 5c, 1, kh, kw)
    ws = w[:, :c].clone()
    mean_part = ws.sum(dim=1, keepdim=True).expand_as(ws) / c  # ws @ (1 1^T / c) over input channels
    w[:, :c] = (1.0 + contrast) * ws - contrast * mean_part
    for j in range(1, 5):
        w[:, j * c : (j + 1) * c] = -contrast / 4.0 * ws


def temporal_start(model: nn.Module, anchor: float = ANCHOR, contrast: float = CONTRAST) -> None:
    """Rewire a denoising RVRT as described in the module docstring (output unchanged up to LayerNorm linearity)."""
    if not supports_temporal_start(model):
        raise ValueError("temporal_start: needs a denoising RVRT with equal widths and inputconv_groups[1:] == 1")
    m: Any = model
    c = int(m.reconstruction.main[1].weight.shape[1]) // 5
    with torch.no_grad():
        for i, name in enumerate(BRANCHES):
            _mean_of_previous_clip(m.deform_align[name])
            _pass_freshest(m.backbone[name], i, c, anchor)
        _share_reconstruction(m, c, contrast)


def load_matching(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Copy every tensor of ``state`` whose name and shape fit ``model``; return the names left at their init."""
    own = model.state_dict()
    kept = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    own.update({k: v.to(own[k].dtype) for k, v in kept.items()})
    model.load_state_dict(own, strict=True)
    return sorted(set(own) - set(kept))


def _blend_direction(weight: torch.Tensor, branch_index: int) -> torch.Tensor:
    """-I on the freshest input's block, +I on the aligned past's block (centre taps), zero elsewhere."""
    out_ch = weight.shape[0]
    direction = torch.zeros_like(weight)
    eye = torch.eye(out_ch, dtype=weight.dtype)
    direction[:, branch_index * out_ch : (branch_index + 1) * out_ch, 0, 1, 1] = -eye
    direction[:, (branch_index + 1) * out_ch : (branch_index + 2) * out_ch, 0, 1, 1] = eye
    return direction


class MixingGate(nn.Module):
    """Training-time parametrisation of a backbone's input convolution: ``weight + mu_c (E_aligned - E_last)``.

    From the temporal start the branch passes its freshest input on: ``new = last + W_a aligned`` with
    ``W_a = -I`` cancelling the aligned past. Mixing the past in means ``new = (1 - mu) last + mu aligned``, a move of
    two weights in opposite directions; a per-weight optimizer sees each half alone as a change of scale and
    refuses it (in practice W_a drifted the wrong way). ``mu`` is that joint move, one value per output channel,
    so its gradient is exactly "would a convex blend with the aligned past lower the loss here?".
    """

    direction: torch.Tensor

    def __init__(self, weight: torch.Tensor, branch_index: int) -> None:
        super().__init__()
        self.register_buffer("direction", _blend_direction(weight, branch_index), persistent=False)
        self.mu = nn.Parameter(torch.zeros(weight.shape[0]))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + self.mu.view(-1, 1, 1, 1, 1) * self.direction


def add_mixing_gates(model: nn.Module) -> None:
    """Attach a MixingGate to every backbone input convolution (training only; see fold_mixing_gates)."""
    from torch.nn.utils import parametrize

    m: Any = model
    for i, name in enumerate(BRANCHES):
        conv = m.backbone[name].main[1]
        parametrize.register_parametrization(conv, "weight", MixingGate(conv.weight.detach(), i))


def fold_mixing_gates(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with every gate folded into its convolution's weight: the official key layout again."""
    out: dict[str, torch.Tensor] = {}
    suffix = ".parametrizations.weight.original"
    for key, value in state.items():
        if key.endswith(suffix):
            stem = key[: -len(suffix)]
            index = BRANCHES.index(stem.split(".")[1])
            mu = state[f"{stem}.parametrizations.weight.0.mu"]
            out[f"{stem}.weight"] = value + mu.view(-1, 1, 1, 1, 1).to(value.dtype) * _blend_direction(value, index)
        elif ".parametrizations.weight." not in key:
            out[key] = value
    return out
