"""RVRT's 3-D window self-attention stack (STL -> STG -> RSTB -> RSTBWithInputConv) and its upsampler.

Every STL routes its window attention through the seam ``vsnystra.attention.attention`` and implements
``configure_attention`` so that ``patch_attention`` can swap the algorithm, enlarge the window (e.g. the paper's
[2, 64, 64]) and drop the relative-position bias or the shift mask, without touching the weights.

Upstream behaviour kept on purpose: the normed features are zero-padded to window multiples WITHOUT masking the
pad tokens; an axis no larger than the window uses window = axis and shift 0; the bias is gathered from the first
N x N entries of the stored index when the window is clipped.
"""

from __future__ import annotations

import functools
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from vsnystra.archs.base import AttentionConfig
from vsnystra.archs.layers import FrameConv3d, Linear, Mlp, Permute
from vsnystra.attention import attention
from vsnystra.attention.tracing import tracing, with_real_twin

Size3 = tuple[int, int, int]


def clip_window(size: Size3, window: Size3, shift: Size3) -> tuple[Size3, Size3]:
    """Upstream rule: an axis no larger than the window uses the whole axis as window and no shift."""
    ws = tuple(s if s <= wi else wi for s, wi in zip(size, window, strict=True))
    ss = tuple(0 if s <= wi else si for s, wi, si in zip(size, window, shift, strict=True))
    return ws, ss  # type: ignore[return-value]


def window_partition(x: torch.Tensor, ws: Size3) -> torch.Tensor:
    """(B, D, H, W, C) -> (B * nW, ws_d * ws_h * ws_w, C), batch-major, tokens in (frame, row, col) order."""
    b, d, h, w, c = x.shape
    x = x.view(b, d // ws[0], ws[0], h // ws[1], ws[1], w // ws[2], ws[2], c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, ws[0] * ws[1] * ws[2], c)


def window_reverse(windows: torch.Tensor, ws: Size3, b: int, d: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`."""
    x = windows.view(b, d // ws[0], h // ws[1], w // ws[2], ws[0], ws[1], ws[2], -1)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, d, h, w, -1)


@functools.lru_cache(maxsize=32)
def _shift_mask_cpu(dp: int, hp: int, wp: int, ws: Size3, ss: Size3) -> torch.Tensor:
    img = torch.zeros(1, dp, hp, wp, 1)
    cnt = 0
    for ds in (slice(-ws[0]), slice(-ws[0], -ss[0]), slice(-ss[0], None)):
        for hs in (slice(-ws[1]), slice(-ws[1], -ss[1]), slice(-ss[1], None)):
            for wsl in (slice(-ws[2]), slice(-ws[2], -ss[2]), slice(-ss[2], None)):
                img[:, ds, hs, wsl, :] = cnt
                cnt += 1
    labels = window_partition(img, ws).squeeze(-1)
    diff = labels.unsqueeze(1) - labels.unsqueeze(2)
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


def shift_mask(
    dp: int, hp: int, wp: int, ws: Size3, ss: Size3, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(nW, N, N) additive mask (0 / -100) of the cyclically shifted, padded grid (dp, hp, wp).

    Cached per device and dtype: one tensor identity per geometry lets the attention seam reuse its mask analysis.
    A trace builds it in the graph (never caching its fake tensors); torch.export attaches the real values.
    """
    if tracing():
        traced = _shift_mask_graph(dp, hp, wp, ws, ss, device).to(dtype)
        return with_real_twin(traced, lambda: _shift_mask_cached(dp, hp, wp, ws, ss, device, dtype))
    return _shift_mask_cached(dp, hp, wp, ws, ss, device, dtype)


@functools.lru_cache(maxsize=16)
def _shift_mask_cached(
    dp: int, hp: int, wp: int, ws: Size3, ss: Size3, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    return _shift_mask_cpu(dp, hp, wp, ws, ss).to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=8)  # a few geometries per video/tile size; each entry is 2 x 8 bytes per token
def _token_order_cpu(b: int, dp: int, hp: int, wp: int, ws: Size3, ss: Size3) -> tuple[torch.Tensor, torch.Tensor]:
    grid = torch.arange(b * dp * hp * wp).view(b, dp, hp, wp, 1)
    forward = window_partition(torch.roll(grid, shifts=(-ss[0], -ss[1], -ss[2]), dims=(1, 2, 3)), ws).reshape(-1)
    inverse = torch.empty_like(forward)
    inverse[forward] = torch.arange(forward.numel())
    return forward, inverse


def token_order(
    b: int, dp: int, hp: int, wp: int, ws: Size3, ss: Size3, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(forward, inverse) row permutations of the (b * dp * hp * wp, C) tokens fusing the cyclic shift by -ss with
    the window partition: ``tokens.index_select(0, forward)`` = roll + :func:`window_partition`, one row gather
    instead of the ~4 full copies torch.roll and the permute make; ``inverse`` undoes both. Uncached in a trace."""
    if tracing():
        return _token_order_graph(b, dp, hp, wp, ws, ss, device)
    return _token_order_cached(b, dp, hp, wp, ws, ss, device)


@functools.lru_cache(maxsize=8)
def _token_order_cached(
    b: int, dp: int, hp: int, wp: int, ws: Size3, ss: Size3, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    forward, inverse = _token_order_cpu(b, dp, hp, wp, ws, ss)
    return forward.to(device), inverse.to(device)


def _shift_mask_graph(dp: int, hp: int, wp: int, ws: Size3, ss: Size3, device: torch.device) -> torch.Tensor:
    """:func:`shift_mask` in a few graph ops (a trace would record 27 slice writes per layer): the region label of
    a position is (coord >= size - window) + (coord >= size - shift) per shifted axis."""

    def region(n: int, w: int, s: int) -> torch.Tensor:
        c = torch.arange(n, device=device)
        return (c >= n - w).long() + (c >= n - s).long() if s > 0 else torch.zeros_like(c)

    labels = region(dp, ws[0], ss[0]).view(-1, 1, 1) * 9 + region(hp, ws[1], ss[1]).view(1, -1, 1) * 3
    labels = (labels + region(wp, ws[2], ss[2]).view(1, 1, -1)).view(1, dp, hp, wp, 1)
    win = window_partition(labels, ws).squeeze(-1)
    return (win.unsqueeze(1) != win.unsqueeze(2)).float() * -100.0


def _token_order_graph(
    b: int, dp: int, hp: int, wp: int, ws: Size3, ss: Size3, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`token_order` in graph ops: the inverse is the inverse roll of the reversed partition of 0..N-1."""
    count = b * dp * hp * wp
    grid = torch.arange(count, device=device).view(b, dp, hp, wp, 1)
    forward = window_partition(torch.roll(grid, shifts=(-ss[0], -ss[1], -ss[2]), dims=(1, 2, 3)), ws).reshape(-1)
    tokens = torch.arange(count, device=device).view(-1, ws[0] * ws[1] * ws[2], 1)
    inverse = torch.roll(window_reverse(tokens, ws, b, dp, hp, wp), shifts=ss, dims=(1, 2, 3)).reshape(-1)
    return forward, inverse


def position_index(ws: Size3) -> torch.Tensor:
    """(N, N) index into the ((2Wd-1)(2Wh-1)(2Ww-1), nH) bias table for tokens in (frame, row, col) order."""
    coords = torch.stack(torch.meshgrid([torch.arange(s) for s in ws], indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    rel = rel + torch.tensor([ws[0] - 1, ws[1] - 1, ws[2] - 1])
    mult = torch.tensor([(2 * ws[1] - 1) * (2 * ws[2] - 1), 2 * ws[2] - 1, 1])
    return (rel * mult).sum(-1)


class WindowAttention(nn.Module):
    """Parameters of one STL's attention: ``relative_position_bias_table``, index buffer, ``qkv_self``, ``proj``."""

    def __init__(self, dim: int, window: Size3, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        rows = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(rows, heads))
        self.register_buffer("relative_position_index", position_index(window))
        self.qkv_self = Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = Linear(dim, dim)

    def bias(self, n: int) -> torch.Tensor:
        """(nH, n, n) relative-position bias from the first n x n index entries (upstream's clipped-window rule)."""
        index: torch.Tensor = self.relative_position_index  # type: ignore[assignment]
        if n > index.shape[0]:
            raise ValueError(
                f"RVRT window attention: a window of {n} tokens is larger than the trained one "
                f"({index.shape[0]}), so the relative-position bias does not exist; "
                "patch with bias='drop' (patch_attention(model, spec, window=..., bias='drop'))"
            )
        table = self.relative_position_bias_table[index[:n, :n].reshape(-1)]
        return table.view(n, n, -1).permute(2, 0, 1)


class STL(nn.Module):
    """Swin transformer layer on (B, D, H, W, C) with 3-D (optionally shifted) windows."""

    def __init__(self, dim: int, heads: int, window: Size3, shift: Size3, mlp_ratio: float, qkv_bias: bool) -> None:
        super().__init__()
        self.trained_window = window
        self.trained_shift = shift
        self.window = window
        self.shift = shift
        self.cfg = AttentionConfig()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dim)

    def configure_attention(self, cfg: AttentionConfig) -> None:
        """Select the attention algorithm and window; [1, h, w]-trained layers keep their single-frame windows."""
        if cfg.window is None:
            window = self.trained_window
        else:
            sizes = (cfg.window,) * 2 if isinstance(cfg.window, int) else tuple(int(s) for s in cfg.window)
            if len(sizes) == 2:
                sizes = (self.trained_window[0], *sizes)
            if len(sizes) != 3:
                raise ValueError(f"RVRT configure_attention: window must be int, (h, w) or (t, h, w), got {cfg.window}")
            t = sizes[0] if self.trained_window[0] > 1 else 1
            window = (t, sizes[1], sizes[2])
        n_trained = self.trained_window[0] * self.trained_window[1] * self.trained_window[2]
        if cfg.bias == "keep" and window[0] * window[1] * window[2] > n_trained:
            raise ValueError(
                f"RVRT configure_attention: window {list(window)} is larger than the trained "
                f"{list(self.trained_window)} and has no relative-position bias; pass bias='drop'"
            )
        shifted = any(s > 0 for s in self.trained_shift)
        self.window = window
        self.shift = tuple(w // 2 for w in window) if shifted else (0, 0, 0)  # type: ignore[assignment]
        self.cfg = cfg

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w, c = x.shape
        ws, ss = clip_window((d, h, w), self.window, self.shift)
        x = self.norm1(x)
        pd, ph, pw = ((wi - s % wi) % wi for s, wi in zip((d, h, w), ws, strict=True))
        if pd or ph or pw:
            x = F.pad(x, (0, 0, 0, pw, 0, ph, 0, pd))
        dp, hp, wp = d + pd, h + ph, w + pw
        shifted = any(s > 0 for s in ss)
        order = token_order(b, dp, hp, wp, ws, ss, x.device) if shifted else None
        if order is not None:
            n = ws[0] * ws[1] * ws[2]
            windows = x.reshape(-1, c).index_select(0, order[0]).view(-1, n, c)
        else:
            windows = window_partition(x, ws)
        bn, n, _ = windows.shape
        heads = self.attn.heads
        qkv = self.attn.qkv_self(windows).reshape(bn, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        mask = None
        if shifted and self.cfg.mask == "keep":
            mask = shift_mask(dp, hp, wp, ws, ss, x.device, x.dtype)
        bias = self.attn.bias(n) if self.cfg.bias == "keep" else None
        spec = self.cfg.spec
        # Paper mode (neither bias nor mask) keeps the research code's landmark layout: the flat (frame, row, col)
        # token order seen as its closest-square grid. The bias/mask-aware path needs the true 3-D window grid.
        grid = ws if bias is not None or mask is not None else None
        out = attention(qkv[0], qkv[1], qkv[2], scale=self.attn.scale, bias=bias, mask=mask, spec=spec, window=grid)
        out = self.attn.proj(out.transpose(1, 2).reshape(bn, n, c))
        if order is not None:
            x = out.view(-1, c).index_select(0, order[1]).view(b, dp, hp, wp, c)
        else:
            x = window_reverse(out, ws, b, dp, hp, wp)
        if pd or ph or pw:
            x = x[:, :d, :h, :w, :]
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._attend(x)
        return x + self.mlp(self.norm2(x))


class STG(nn.Module):
    """A group of STLs, even ones unshifted, odd ones shifted by half a window."""

    def __init__(self, dim: int, depth: int, heads: int, window: Size3, mlp_ratio: float, qkv_bias: bool) -> None:
        super().__init__()
        half = (window[0] // 2, window[1] // 2, window[2] // 2)
        self.blocks = nn.ModuleList(
            STL(dim, heads, window, (0, 0, 0) if i % 2 == 0 else half, mlp_ratio, qkv_bias) for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, D, H, W, C) channels-last."""
        for blk in self.blocks:
            x = blk(x)
        return x


class RSTB(nn.Module):
    """x + linear(STG(x)) on (B, C, D, H, W) features (upstream keys ``residual_group``, ``linear``)."""

    def __init__(self, dim: int, depth: int, heads: int, window: Size3, mlp_ratio: float, qkv_bias: bool) -> None:
        super().__init__()
        self.residual_group = STG(dim, depth, heads, window, mlp_ratio, qkv_bias)
        self.linear = Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(self.residual_group(x.permute(0, 2, 3, 4, 1)))
        return x + y.permute(0, 4, 1, 2, 3)


class RSTBWithInputConv(nn.Module):
    """Conv3d (1,3,3) + LayerNorm, RSTBs, LayerNorm on (n, t, c, h, w); Sequential indices as upstream (``main.k``)."""

    def __init__(
        self,
        in_channels: int,
        dim: int,
        *,
        groups: int,
        num_blocks: int,
        depth: int,
        heads: int,
        window: Size3,
        mlp_ratio: float,
        qkv_bias: bool,
    ) -> None:
        super().__init__()
        blocks = nn.Sequential(*(RSTB(dim, depth, heads, window, mlp_ratio, qkv_bias) for _ in range(num_blocks)))
        self.main = nn.Sequential(
            Permute(0, 2, 1, 3, 4),
            FrameConv3d(in_channels, dim, kernel_size=(1, 3, 3), padding=(0, 1, 1), groups=groups),
            Permute(0, 2, 3, 4, 1),
            nn.LayerNorm(dim),
            Permute(0, 4, 1, 2, 3),
            blocks,
            Permute(0, 2, 3, 4, 1),
            nn.LayerNorm(dim),
            Permute(0, 1, 4, 2, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class Upsample4(nn.Sequential):
    """x4 pixel-shuffle upsampler on (n, c, d, h, w): indices 0 and 5 conv 64->256, 10 conv 64->64."""

    def __init__(self, feat: int = 64) -> None:
        layers: list[nn.Module] = []
        for _ in range(2):
            layers += [
                FrameConv3d(feat, 4 * feat, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
                Permute(0, 2, 1, 3, 4),
                nn.PixelShuffle(2),
                Permute(0, 2, 1, 3, 4),
                nn.LeakyReLU(0.1, inplace=True),
            ]
        layers.append(FrameConv3d(feat, feat, kernel_size=(1, 3, 3), padding=(0, 1, 1)))
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same layers, run on channels-last frames: CPU pixel_shuffle is ~8x faster there than on NCHW."""
        n, c, t, h, w = x.shape
        y = x.transpose(1, 2).reshape(n * t, c, h, w).contiguous(memory_format=torch.channels_last)
        for i in (0, 5):
            y = cast(FrameConv3d, self[i]).frames(y)
            y = F.leaky_relu(F.pixel_shuffle(y, 2), cast(nn.LeakyReLU, self[i + 4]).negative_slope, inplace=True)
        y = cast(FrameConv3d, self[10]).frames(y)
        return y.view(n, t, *y.shape[1:]).transpose(1, 2)


__all__ = ["RSTB", "STG", "STL", "RSTBWithInputConv", "Upsample4", "clip_window", "shift_mask"]
