"""SwinIR's building blocks: window attention, the (shifted-)window transformer block and the residual group.

State-dict names and shapes match JingyunLiang/SwinIR ``network_swinir.py``. The window attention of every block goes
through the seam :func:`vsnystra.attention.attention` and can be reconfigured by :func:`vsnystra.patch_attention`.
"""

from __future__ import annotations

import torch
from torch import nn

from vsnystra.archs.base import AttentionConfig
from vsnystra.archs.common import (
    BlockSequence,
    MaskCache,
    RelativeBiasCache,
    clamp_window,
    image_to_tokens,
    relative_position_index,
    shift_mask,
    tokens_to_image,
)
from vsnystra.archs.layers import Linear, Mlp
from vsnystra.attention import attention
from vsnystra.attention.specs import AttentionSpec, Exact


class WindowAttention(nn.Module):
    """q/k/v projection, relative-position bias and output projection of one Swin block (upstream key names)."""

    def __init__(self, dim: int, window: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.trained_window = (window, window)
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index((window, window)))
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = Linear(dim, dim)
        self._bias = RelativeBiasCache()

    def bias(self, window: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        index: torch.Tensor = self.relative_position_index  # type: ignore[assignment]
        return self._bias.get(self.relative_position_bias_table, index, self.trained_window, window, dtype)

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
        qkv = self.qkv(x).reshape(bn, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.bias(window, x.dtype) if use_bias else None
        out = attention(qkv[0], qkv[1], qkv[2], scale=self.scale, bias=bias, mask=mask, spec=spec, window=window)
        return self.proj(out.transpose(1, 2).reshape(bn, n, c))


class SwinTransformerBlock(nn.Module):
    """(Shifted-)window attention block; implements ``configure_attention`` for patch_attention."""

    def __init__(
        self,
        dim: int,
        resolution: int,
        num_heads: int,
        window: int,
        shifted: bool,
        mlp_ratio: float,
        qkv_bias: bool,
        masks: MaskCache,
        store_mask: bool,
    ) -> None:
        super().__init__()
        self.resolution = resolution
        self.shifted = shifted
        self.trained_window = window
        win, shift = clamp_window(resolution, window, shifted)
        self.window, self.shift = win, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, win, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        if shift > 0 and store_mask:
            # Only to load/save official checkpoints strictly; forward uses the shared per-size cache.
            self.register_buffer("attn_mask", shift_mask(resolution, resolution, win, shift))
        self._masks = masks
        self.enlarged = False
        self.spec: AttentionSpec = Exact()
        self.use_bias = True
        self.use_mask = True

    def configure_attention(self, cfg: AttentionConfig) -> None:
        want = self.trained_window if cfg.window is None else cfg.window
        if not isinstance(want, int):
            sizes = set(want)
            if len(sizes) != 1:
                raise ValueError(f"patch_attention: SwinIR needs a square window (int), got {cfg.window!r}")
            want = sizes.pop()
        self.enlarged = int(want) != self.trained_window
        if self.enlarged:
            # Research-code rule (run_swinir.py builds img_size = the padded test size): the clamp is decided by the
            # actual input in forward, not by the checkpoint's training img_size.
            self.window, self.shift = int(want), (int(want) // 2 if self.shifted else 0)
        else:
            self.window, self.shift = clamp_window(self.resolution, int(want), self.shifted)
        self.spec = cfg.spec
        self.use_bias = cfg.bias == "keep"
        self.use_mask = cfg.mask == "keep"

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h, w = size
        b, _, c = x.shape
        ws, s = self.window, self.shift
        if self.enlarged and min(h, w) <= ws:
            s = 0  # the (padded) input is one window high or wide: no shift, as upstream's clamp would decide
        fwd, inv = self._masks.order(h, w, (ws, ws), (s, s), x.device)
        win = self.norm1(x).index_select(1, fwd).view(-1, ws * ws, c)  # roll(-s) + window partition in one gather
        mask = None
        if s and self.use_mask:
            mask = self._masks.get(h, w, (ws, ws), (s, s), x.device, x.dtype)
        y = self.attn(win, window=(ws, ws), mask=mask, use_bias=self.use_bias, spec=self.spec)
        x = x + y.view(b, h * w, c).index_select(1, inv)  # window reverse + roll(+s)
        return x + self.mlp(self.norm2(x))


def resi_conv(dim: int, kind: str) -> nn.Module:
    if kind == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    if kind == "3conv":
        q = dim // 4
        return nn.Sequential(
            nn.Conv2d(dim, q, 3, 1, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(q, q, 1, 1, 0),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(q, dim, 3, 1, 1),
        )
    raise ValueError(f"SwinIR: resi_connection must be '1conv' or '3conv', got {kind!r}")


class RSTB(nn.Module):
    """Residual Swin Transformer block: blocks, then a conv on the image grid, plus the skip."""

    def __init__(self, blocks: list[SwinTransformerBlock], dim: int, resi_connection: str) -> None:
        super().__init__()
        self.residual_group = BlockSequence(blocks)
        self.conv = resi_conv(dim, resi_connection)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        y = tokens_to_image(self.residual_group(x, size), size)
        return x + image_to_tokens(self.conv(y))


class PatchEmbed(nn.Module):
    """Holds the optional LayerNorm applied to the flattened tokens (upstream's ``patch_embed.norm``)."""

    def __init__(self, dim: int, norm: bool) -> None:
        super().__init__()
        self.norm: nn.Module = nn.LayerNorm(dim) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(image_to_tokens(x))
