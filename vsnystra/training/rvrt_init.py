"""A start point for the compact RVRT denoiser from which a CPU budget can learn.

RVRT's denoiser computes all features at 1/4 resolution (two stride-2 convolutions) and decodes its residual with
a x4 pixel-shuffle upsampler. From the stock initialisation the residual carries no full-resolution information,
so the only thing it can learn early is to vanish: in every CPU run so far the output converged to the noisy input
(loss equal to the input's for hundreds of steps) long before any denoising appeared.

``space_to_depth_start`` sets the network up as a working (if crude) denoiser instead:
- the two stride-2 convolutions become an exact space-to-depth of each 4x4x3 block into the 48 feature channels
  (embed_dims[0] must be 48), offset so that the LeakyReLUs pass the values unchanged;
- the LayerNorms on the path are made (nearly) linear by a large alternating "anchor" +-A added before them, which
  dominates their variance, and removed by their affine parameters after them; a LayerNorm still subtracts the
  block's mean over its 48 values, which the decoder does not need (it works on per-colour deviations);
- every residual transformer block starts as the identity (its output linear is zero), and the reconstruction reads
  the shallow features only (its weights on the propagation branches are zero);
- the first 1x1 convolution of the decoder forms x - (per-colour 4x4 block mean), and the upsampler's convolutions
  plus pixel shuffles are the exact inverse of the space-to-depth, so the output starts as
  ``x - alpha * (x - blockmean4x4(x))``: a box-filter blend.
The other entries of the designed convolutions keep their default initialisation scaled by ``eps`` (zero where the
input carries the anchor), so gradients reach every parameter while the start function stays within a few percent
of the design; zeroed weights still receive gradients, so nothing is dead. Requires ``inputconv_groups[5] == 1``
(the reconstruction's input convolution must see all shallow channels).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

ANCHOR = 3.0  # +-A pattern that keeps the LayerNorms ~linear (3 % scale error); larger A makes training unstable
OFFSET = 2.0  # keeps values positive through LeakyReLU (inputs lie in about [-0.7, 1.7])


def _scaled(module: nn.Module, eps: float) -> None:
    for p in module.parameters(recurse=False):
        p.mul_(eps)


def _centre(conv: nn.Module) -> torch.Tensor:
    """The (out, in, kh, kw) centre-frame kernel of a (1, kh, kw) Conv3d."""
    w: torch.Tensor = conv.weight  # type: ignore[assignment]
    return w[:, :, 0]


def _linear_layernorm(ln: nn.Module, pattern: torch.Tensor, keep_anchor: bool) -> None:
    """LayerNorm of (content + A·pattern): gain A undoes the normalisation; beta optionally removes the anchor."""
    w: torch.Tensor = ln.weight  # type: ignore[assignment]
    b: torch.Tensor = ln.bias  # type: ignore[assignment]
    w.fill_(ANCHOR)
    b.copy_(torch.zeros_like(pattern) if keep_anchor else -ANCHOR * pattern)


def _identity_rstbs(blocks: nn.Module) -> None:
    for rstb in blocks.children():
        linear: Any = rstb.linear
        _scaled(linear, 0.0)


def supports_space_to_depth(model: nn.Module) -> bool:
    """Whether the design applies: a denoising RVRT with 48 shallow channels and an ungrouped reconstruction input."""
    m: Any = model
    fe: Any = getattr(m, "feat_extract", None)
    if not isinstance(fe, nn.Sequential):
        return False
    first: Any = fe[1]
    return int(first.weight.shape[0]) == 48 and int(m.reconstruction.main[1].groups) == 1


def space_to_depth_start(model: nn.Module, alpha: float = 0.5, eps: float = 0.02) -> None:
    """Initialise a denoising RVRT (embed 48, inputconv_groups[5] == 1) as described in the module docstring."""
    m: Any = model
    if not supports_space_to_depth(model):
        raise ValueError("space_to_depth_start: needs embed_dims[0] == 48 and inputconv_groups[5] == 1")
    c0 = 48
    pattern = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(c0)])

    def s2d(color: int, py: int, px: int) -> int:  # channel of pixel (py, px) of a 4x4 block
        return color * 16 + py * 4 + px

    fe = m.feat_extract[6].main
    rec = m.reconstruction.main
    pre = m.conv_before_upsampler[0]
    up0, up5, up10 = m.upsampler[0], m.upsampler[5], m.upsampler[10]
    conv1, conv2 = m.feat_extract[1], m.feat_extract[3]
    with torch.no_grad():
        for conv in (conv1, conv2, rec[1], pre, up0, up5, up10, m.conv_last):
            _scaled(conv, eps)
        _scaled(fe[1], 0.0)  # its input carries the anchor: random weights would swamp the content

        for color in range(3):
            for dy in range(2):
                for dx in range(2):
                    ch = color * 4 + dy * 2 + dx
                    _centre(conv1)[ch, color, 1 + dy, 1 + dx] = 1.0
                    conv1.bias[ch] = OFFSET
                    for by in range(2):
                        for bx in range(2):
                            o = s2d(color, 2 * by + dy, 2 * bx + dx)
                            _centre(conv2)[o, ch, 1 + by, 1 + bx] = 1.0
        conv2.bias.copy_(-OFFSET + ANCHOR + 1.0 + ANCHOR * pattern)  # z = x + A + 1 + A·p > 0

        _centre(fe[1])[:, :, 1, 1] += torch.eye(c0)
        _linear_layernorm(fe[3], pattern, keep_anchor=True)
        _identity_rstbs(fe[5])
        _linear_layernorm(fe[7], pattern, keep_anchor=False)  # shallow features: x - block mean

        _centre(rec[1])[:c0, :c0, 1, 1] += torch.eye(c0)
        rec[1].weight[:, c0:] = 0.0  # propagation branches: learned from zero
        rec[1].bias.copy_(ANCHOR * pattern)
        _linear_layernorm(rec[3], pattern, keep_anchor=True)
        _identity_rstbs(rec[5])
        _linear_layernorm(rec[7], pattern, keep_anchor=False)

        # decoder: per-colour deviation from the block mean, +OFFSET, through the inverse space-to-depth
        w_pre = pre.weight[:, :, 0, 0, 0]
        for color in range(3):
            idx = torch.arange(color * 16, color * 16 + 16)
            w_pre[idx.unsqueeze(1), idx.unsqueeze(0)] += torch.eye(16) - 1.0 / 16
        pre.bias[:c0] = OFFSET
        for color in range(3):
            for dy in range(2):
                for dx in range(2):
                    k = color * 4 + dy * 2 + dx  # half-resolution channel after the first shuffle
                    for by in range(2):
                        for bx in range(2):
                            _centre(up0)[k * 4 + by * 2 + bx, s2d(color, 2 * by + dy, 2 * bx + dx), 1, 1] = 1.0
                    _centre(up5)[color * 4 + dy * 2 + dx, k, 1, 1] = 1.0
            _centre(up10)[color, color, 1, 1] = 1.0
            up10.bias[color] = -OFFSET
            _centre(m.conv_last)[color, color, 1, 1] = -alpha
