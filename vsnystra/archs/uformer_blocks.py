"""Uformer's building blocks: LeWin transformer block (window attention, modulator, LeFF) and the token/image
projections between stages.

State-dict names and shapes match ZhendongWang6/Uformer ``model.py``; the window attention goes through the seam
:func:`vsnystra.attention.attention` and can be reconfigured by :func:`vsnystra.patch_attention`.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from vsnystra.archs import layers
from vsnystra.archs.base import AttentionConfig
from vsnystra.archs.common import (
    MaskCache,
    RelativeBiasCache,
    clamp_window,
    image_to_tokens,
    relative_position_index,
    tokens_to_image,
)
from vsnystra.archs.layers import Linear, conv_gelu, linear_gelu
from vsnystra.attention import attention
from vsnystra.attention.specs import AttentionSpec, Exact


class SepConv2d(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, 1, 1, groups=cin)
        self.act = nn.ReLU()
        self.pointwise = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.act(self.depthwise(x)))


class LinearProjection(nn.Module):
    def __init__(self, dim: int, heads: int, bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = Linear(dim, dim, bias=bias)
        self.to_kv = Linear(dim, 2 * dim, bias=bias)

    def forward(self, x: torch.Tensor, window: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bn, n, c = x.shape
        q = self.to_q(x).reshape(bn, n, self.heads, c // self.heads).transpose(1, 2)
        kv = self.to_kv(x).reshape(bn, n, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return q, kv[0], kv[1]


class ConvProjection(nn.Module):
    """Depthwise 3x3 + ReLU + pointwise projection inside each window (zero padding at window borders)."""

    def __init__(self, dim: int, heads: int, bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = SepConv2d(dim, dim)
        self.to_k = SepConv2d(dim, dim)
        self.to_v = SepConv2d(dim, dim)

    def forward(self, x: torch.Tensor, window: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        bn, n, c = x.shape
        grid = x.transpose(1, 2).reshape(bn, c, *window)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(bn, self.heads, c // self.heads, n).transpose(2, 3)

        return heads(self.to_q(grid)), heads(self.to_k(grid)), heads(self.to_v(grid))


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, heads: int, projection: str, qkv_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.trained_window = (window, window)
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index((window, window)))
        self.qkv: nn.Module
        if projection == "linear":
            self.qkv = LinearProjection(dim, heads, qkv_bias)
        elif projection == "conv":
            self.qkv = ConvProjection(dim, heads, qkv_bias)
        else:
            raise ValueError(f"Uformer: token_projection must be 'linear' or 'conv', got {projection!r}")
        self.proj = Linear(dim, dim)
        self._bias = RelativeBiasCache()

    def forward(
        self,
        x: torch.Tensor,
        *,
        window: tuple[int, int],
        mask: torch.Tensor | None,
        use_bias: bool,
        spec: AttentionSpec,
    ) -> torch.Tensor:
        bn, n, c = x.shape
        q, k, v = self.qkv(x, window)
        bias = None
        if use_bias:
            index: torch.Tensor = self.relative_position_index  # type: ignore[assignment]
            bias = self._bias.get(self.relative_position_bias_table, index, self.trained_window, window, x.dtype)
        out = attention(q, k, v, scale=self.scale, bias=bias, mask=mask, spec=spec, window=window)
        return self.proj(out.transpose(1, 2).reshape(bn, n, c))


class LeFF(nn.Module):
    """Locally-enhanced feed-forward: linear, depthwise 3x3 on the image grid, linear (GELU between)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.linear1 = nn.Sequential(nn.Linear(dim, hidden), nn.GELU())
        self.dwconv = nn.Sequential(nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden), nn.GELU())
        self.linear2 = nn.Sequential(Linear(hidden, dim))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        fc, conv = cast(nn.Linear, self.linear1[0]), cast(nn.Conv2d, self.dwconv[0])
        y = conv_gelu(tokens_to_image(linear_gelu(x, fc), size), conv)
        return self.linear2(image_to_tokens(y))


class Mlp(layers.Mlp):
    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return super().forward(x)


class LeWinBlock(nn.Module):
    """LeWin transformer block; implements ``configure_attention`` for patch_attention."""

    def __init__(
        self,
        dim: int,
        resolution: int,
        heads: int,
        window: int,
        shifted: bool,
        mlp_ratio: float,
        qkv_bias: bool,
        projection: str,
        token_mlp: str,
        modulator: bool,
        masks: MaskCache,
    ) -> None:
        super().__init__()
        self.resolution = resolution
        self.shifted = shifted
        self.trained_window = window
        self.window, self.shift = clamp_window(resolution, window, shifted)
        self.modulator = nn.Embedding(window * window, dim) if modulator else None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, self.window, heads, projection, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp: nn.Module
        if token_mlp == "leff":
            self.mlp = LeFF(dim, hidden)
        elif token_mlp in ("mlp", "ffn"):
            self.mlp = Mlp(dim, hidden)
        else:
            raise ValueError(f"Uformer: token_mlp must be 'leff' or 'mlp', got {token_mlp!r}")
        self._masks = masks
        self._mod_cache: dict[str, Any] = {}  # plain dict: a cached tensor must never register as a parameter
        self.spec: AttentionSpec = Exact()
        self.use_bias = True
        self.use_mask = True
        self.use_modulator = True

    def configure_attention(self, cfg: AttentionConfig) -> None:
        want = self.trained_window if cfg.window is None else cfg.window
        if not isinstance(want, int):
            sizes = set(want)
            if len(sizes) != 1:
                raise ValueError(f"patch_attention: Uformer needs a square window (int), got {cfg.window!r}")
            want = sizes.pop()
        self.window, self.shift = clamp_window(self.resolution, int(want), self.shifted)
        self.spec = cfg.spec
        self.use_bias = cfg.bias == "keep"
        self.use_mask = cfg.mask == "keep"
        self.use_modulator = cfg.modulator == "keep"

    def _modulator(self, ws: int, dtype: torch.dtype) -> torch.Tensor:
        """Modulator (ws², C); for another window its (w, w) grid is resized bicubically (our extension)."""
        assert self.modulator is not None
        weight = self.modulator.weight
        grad = torch.is_grad_enabled() and weight.requires_grad
        key = (ws, weight.device, dtype, weight.data_ptr(), weight._version)
        if not grad and self._mod_cache.get("key") == key:
            value: torch.Tensor = self._mod_cache["value"]
            return value
        if grad:
            return _resize_modulator(weight, ws, dtype)
        with torch.inference_mode(False), torch.no_grad():
            value = _resize_modulator(weight.detach(), ws, dtype)
        self._mod_cache.update(key=key, value=value)
        return value

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h, w = size
        b, _, c = x.shape
        ws, s = self.window, self.shift
        fwd, inv = self._masks.order(h, w, (ws, ws), (s, s), x.device)
        win = self.norm1(x).index_select(1, fwd).view(-1, ws * ws, c)  # roll(-s) + window partition in one gather
        if self.modulator is not None and self.use_modulator:
            win = win + self._modulator(ws, win.dtype)
        mask = self._masks.get(h, w, (ws, ws), (s, s), x.device, x.dtype) if s and self.use_mask else None
        y = self.attn(win, window=(ws, ws), mask=mask, use_bias=self.use_bias, spec=self.spec)
        x = x + y.view(b, h * w, c).index_select(1, inv)  # window reverse + roll(+s)
        return x + self.mlp(self.norm2(x), size)


def _resize_modulator(weight: torch.Tensor, ws: int, dtype: torch.dtype) -> torch.Tensor:
    """(side², C) embedding seen as a side x side grid per channel, resized bicubically to ws x ws."""
    side = math.isqrt(weight.shape[0])
    if ws == side:
        return weight.to(dtype)
    grid = weight.detach().float().T.reshape(1, -1, side, side)
    grid = F.interpolate(grid, size=(ws, ws), mode="bicubic", align_corners=False)
    return grid.reshape(weight.shape[1], ws * ws).T.to(dtype).contiguous()


class ConvWrap(nn.Module):
    """Token sequence -> image -> conv -> token sequence (Downsample ``conv.0`` / Upsample ``deconv.0``)."""

    def __init__(self, name: str, conv: nn.Module) -> None:
        super().__init__()
        self.add_module(name, nn.Sequential(conv))
        self._name = name

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return image_to_tokens(getattr(self, self._name)(tokens_to_image(x, size)))


class InputProj(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.LeakyReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return image_to_tokens(self.proj(x))


class OutputProj(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.proj(tokens_to_image(x, size)).contiguous()
