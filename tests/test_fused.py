"""The fused oneDNN linear/conv+GELU path equals the plain ops and never runs where it cannot (autograd)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vsnystra.archs import layers as fused


def _dtypes() -> list[torch.dtype]:
    return [d for d in (torch.float32, torch.bfloat16) if fused.fused_available(d)]


def test_fused_ops_exist_on_this_build() -> None:
    # every x86-64/aarch64 Linux wheel of torch ships oneDNN; if this fails the fast path silently never runs
    assert fused.fused_available(torch.float32)
    assert not fused.fused_available(torch.float16)


@pytest.mark.parametrize("dtype", _dtypes())
def test_linear_and_conv_gelu_equal_the_plain_ops(dtype: torch.dtype) -> None:
    lin = nn.Linear(24, 96).to(dtype)
    conv = nn.Conv2d(96, 96, 3, 1, 1, groups=96).to(dtype)
    x = torch.randn(2, 7 * 9, 24, dtype=dtype)
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 3e-2, "rtol": 2e-2}
    with torch.no_grad():
        h = fused.linear_gelu(x, lin)
        torch.testing.assert_close(h, F.gelu(lin(x)), **tol)
        img = h.view(2, 7, 9, 96).permute(0, 3, 1, 2)  # channels-last view, as the models pass it
        y = fused.conv_gelu(img, conv)
        assert y.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(y, F.gelu(conv(img)), **tol)


@contextlib.contextmanager
def fused_linear_calls() -> Iterator[list[int]]:
    """Counts the calls to oneDNN's fused linear inside the block (one entry per call)."""
    calls: list[int] = []
    real = torch.ops.mkldnn._linear_pointwise

    def spy(*args: object) -> torch.Tensor:
        calls.append(1)
        return real(*args)

    object.__setattr__(torch.ops.mkldnn, "_linear_pointwise", spy)
    try:
        yield calls
    finally:
        object.__setattr__(torch.ops.mkldnn, "_linear_pointwise", real)


def test_autograd_takes_the_plain_path() -> None:
    mlp = fused.Mlp(8, 32)
    x = torch.randn(3, 5, 8, requires_grad=True)
    with fused_linear_calls() as calls:
        mlp(x).sum().backward()
        assert not calls and x.grad is not None and mlp.fc1.weight.grad is not None
        with torch.no_grad():
            mlp(x)
        assert calls  # inference does use the fused op


@pytest.mark.parametrize("dtype", _dtypes())
def test_onednn_linear_equals_nn_linear_and_keeps_its_keys(dtype: torch.dtype) -> None:
    ref = nn.Linear(30, 90).to(dtype)
    lin = fused.Linear(30, 90).to(dtype)
    lin.load_state_dict(ref.state_dict(), strict=True)
    assert set(lin.state_dict()) == {"weight", "bias"}
    no_bias = fused.Linear(30, 90, bias=False).to(dtype)
    no_bias.weight.data.copy_(ref.weight.data)
    x = torch.randn(4, 49, 30, dtype=dtype)
    strided = torch.randn(4, 30, 49, dtype=dtype).transpose(1, 2)  # a non-contiguous view, as after a window gather
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 3e-2, "rtol": 2e-2}
    with torch.no_grad():
        for inp in (x, strided):
            torch.testing.assert_close(lin(inp), ref(inp), **tol)
            torch.testing.assert_close(no_bias(inp), F.linear(inp, ref.weight), **tol)
    y = lin(x.requires_grad_())  # training: the plain, differentiable op
    y.sum().backward()
    assert lin.weight.grad is not None and x.grad is not None


def test_plain_ops_turns_the_fused_path_off_in_its_block_only() -> None:
    mlp = fused.Mlp(8, 32)
    x = torch.randn(3, 5, 8)
    with fused_linear_calls() as calls, torch.no_grad():
        with fused.plain_ops():
            plain = mlp(x)
        assert not calls
        fast = mlp(x)
        assert calls  # back on after the block
    torch.testing.assert_close(plain, fast, atol=1e-5, rtol=1e-5)
