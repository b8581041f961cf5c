"""The layers the architectures share: linear/convolution + GELU fused on CPU inference, linear layers through
oneDNN, the MLP, and RVRT's Conv3d-as-Conv2d and permute layers.

GELU over a (tokens, 4·C) activation is memory-bound: unfused, the linear writes the activation, GELU reads it and
writes another one. oneDNN applies the GELU (exact erf form) to each output tile while it is in cache, which made a
Uformer LeFF 1.2–1.7× faster on CPU (benchmarks/results/models.md). The fused ops are the ones torch.compile uses
for CPU (``torch.ops.mkldnn._linear_pointwise`` / ``_convolution_pointwise``); they have no autograd, so training,
other devices and dtypes, and builds without them take the plain path. A one-time probe per dtype compares the
fused result with the plain one, so a build whose op misbehaves is never used.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

_DTYPES = (torch.float32, torch.bfloat16)
_PLAIN: contextvars.ContextVar[bool] = contextvars.ContextVar("vsnystra_plain_ops", default=False)


@contextlib.contextmanager
def plain_ops() -> Iterator[None]:
    """Inside this block (this thread or task only) every layer takes the plain aten path, as upstream's would.

    Why: to time the stock computation side by side with ours (benchmarks/models.py, setting a) and to rule the
    fused path out when a result is questioned. Nothing global changes.
    """
    token = _PLAIN.set(True)
    try:
        yield
    finally:
        _PLAIN.reset(token)


@functools.cache
def fused_available(dtype: torch.dtype) -> bool:
    """Whether this build's oneDNN fused ops exist and agree with the plain ops for ``dtype`` (probed once)."""
    if dtype not in _DTYPES or not torch.backends.mkldnn.is_available():
        return False
    try:
        if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            x = torch.randn(2, 5, 8).to(dtype)
            w = torch.randn(16, 8).to(dtype)
            b = torch.randn(16).to(dtype)
            img = torch.randn(1, 16, 6, 7).to(dtype).contiguous(memory_format=torch.channels_last)
            cw = torch.randn(16, 1, 3, 3).to(dtype)
        got = torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu", [None], "none")
        ref = F.gelu(F.linear(x, w, b))
        got_c = torch.ops.mkldnn._convolution_pointwise(img, cw, b, [1, 1], [1, 1], [1, 1], 16, "gelu", [None], "none")
        ref_c = F.gelu(F.conv2d(img, cw, b, 1, 1, 1, 16))
        tol = 1e-4 if dtype == torch.float32 else 5e-2
        ok = bool(
            got.shape == ref.shape
            and got_c.shape == ref_c.shape
            and torch.allclose(got.float(), ref.float(), atol=tol, rtol=tol)
            and torch.allclose(got_c.float(), ref_c.float(), atol=tol, rtol=tol)
        )
    except Exception as err:  # op missing in this build, or oneDNN refused the primitive
        log.debug("vsnystra: fused oneDNN linear/conv+GELU unavailable for %s: %s", dtype, err)
        return False
    if not ok:
        log.warning("vsnystra: this build's fused oneDNN linear/conv+GELU disagrees with the plain ops; not used")
    return ok


def _use_fused(x: torch.Tensor, weight: torch.Tensor) -> bool:
    if x.device.type != "cpu" or x.dtype != weight.dtype or torch.compiler.is_compiling() or _PLAIN.get():
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return False  # the fused ops have no backward
    return fused_available(x.dtype)


def linear_gelu(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """``gelu(linear(x))`` (exact erf GELU), fused on CPU inference."""
    if _use_fused(x, linear.weight):
        return torch.ops.mkldnn._linear_pointwise(x, linear.weight, linear.bias, "gelu", [None], "none")
    return F.gelu(linear(x))


def conv_gelu(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``gelu(conv(x))`` for a zero-padded Conv2d, fused on CPU inference (keeps x's channels-last layout)."""
    if conv.padding_mode == "zeros" and not isinstance(conv.padding, str) and _use_fused(x, conv.weight):
        return torch.ops.mkldnn._convolution_pointwise(
            x,
            conv.weight,
            conv.bias,
            list(conv.padding),
            list(conv.stride),
            list(conv.dilation),
            conv.groups,
            "gelu",
            [None],
            "none",
        )
    return F.gelu(conv(x))


class Linear(nn.Linear):
    """nn.Linear (same parameters and keys) that runs through oneDNN on CPU inference.

    Why: for the narrow layers of these models (32-180 channels in, many tokens) oneDNN's GEMM beats aten's addmm by
    1.05-1.9x in fp32 on one core (1.7x for Uformer-B's 32 -> 96 projection at 256x256); same result to rounding.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() >= 2 and _use_fused(x, self.weight):
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [None], "none")
        return F.linear(x, self.weight, self.bias)


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2 on the last dimension (the upstream key names ``fc1``/``fc2``; ``act`` has no weights)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None) -> None:
        super().__init__()
        self.fc1 = Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = Linear(hidden_features, out_features or in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(linear_gelu(x, self.fc1))


class Permute(nn.Module):
    """Parameter-free stand-in for einops Rearrange: keeps upstream's Sequential indices (state-dict keys)."""

    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)

    def extra_repr(self) -> str:
        return f"dims={self.dims}"


class FrameConv3d(nn.Conv3d):
    """Conv3d whose temporal kernel is 1, computed as one Conv2d over all frames.

    PyTorch's CPU Conv3d runs (1, k, k) kernels through ``slow_conv3d`` (im2col + GEMM, no oneDNN), 2-8x slower
    than Conv2d on the same data. Parameters keep Conv3d's names and 5-D shapes, so official checkpoints load
    unchanged; only the computation differs (same sums in another order, ~1e-6 relative). Autograd flows to the
    5-D weight through the ``weight[:, :, 0]`` view.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.dim() != 5
            or self.kernel_size[0] != 1
            or self.stride[0] != 1
            or isinstance(self.padding, str)
            or self.padding[0] != 0
            or self.padding_mode != "zeros"
        ):
            return super().forward(x)
        n, c, t, h, w = x.shape
        # (n, c, t, h, w) is usually a transposed view of (n, t, c, h, w): then this reshape is free
        y = self.frames(x.transpose(1, 2).reshape(n * t, c, h, w))
        return y.view(n, t, *y.shape[1:]).transpose(1, 2)

    def frames(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution on (N, C, H, W) frames (temporal kernel 1, zero padding)."""
        pad = self.padding[1:] if not isinstance(self.padding, str) else self.padding
        return F.conv2d(x, self.weight[:, :, 0], self.bias, self.stride[1:], pad, self.dilation[1:], self.groups)
