"""Window helpers shared by the Swin-style architectures (SwinIR, Uformer, RVRT may import them).

Signatures here are stable: other architecture modules rely on them.
Conventions follow upstream Swin: windows are batch-major, tokens row-major inside a window, the shifted-window
mask uses 0 / -100 (not -inf), and the relative-position index is (Δr + wh-1)(2ww-1) + (Δc + ww-1).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vsnystra.attention.tracing import tracing, with_real_twin

MASK_VALUE = -100.0


def as_window(window: int | Sequence[int]) -> tuple[int, int]:
    """Normalise an int or (h, w) window to a 2-tuple."""
    if isinstance(window, int):
        return (window, window)
    wh, ww = (int(s) for s in window)
    return (wh, ww)


def window_partition(x: torch.Tensor, window: int | Sequence[int]) -> torch.Tensor:
    """(B, H, W, C) -> (B·nW, wh·ww, C), windows batch-major then row-major (upstream order)."""
    wh, ww = as_window(window)
    b, h, w, c = x.shape
    x = x.view(b, h // wh, wh, w // ww, ww, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, wh * ww, c)


def relative_position_index(window: Sequence[int]) -> torch.Tensor:
    """Swin relative-position index (N, N) int64 for a 2-D (h, w) or 3-D (t, h, w) window."""
    sizes = [int(s) for s in window]
    coords = torch.stack(torch.meshgrid(*[torch.arange(s) for s in sizes], indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # N, N, D
    index = torch.zeros(rel.shape[:2], dtype=torch.long)
    for axis, s in enumerate(sizes):
        stride = math.prod(2 * t - 1 for t in sizes[axis + 1 :])
        index += (rel[:, :, axis] + s - 1) * stride
    return index


def gather_bias(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Relative-position bias (nH, N, N) from its table ((2w-1)^2, nH) and index (N, N)."""
    n = index.shape[0]
    return table[index.reshape(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()


def resize_bias_table(table: torch.Tensor, old: Sequence[int], new: Sequence[int]) -> torch.Tensor:
    """Bicubic resize of a 2-D bias table from window ``old`` to ``new``, as Swin does for larger windows.

    The table is seen as a (2h-1, 2w-1) image per head (align_corners=False), the rule Swin Transformer uses when
    fine-tuning at a larger window; no retraining is involved, so it is an approximation.
    """
    oh, ow = as_window(old)
    nh, nw = as_window(new)
    if (oh, ow) == (nh, nw):
        return table
    heads = table.shape[1]
    grid = table.detach().float().T.reshape(1, heads, 2 * oh - 1, 2 * ow - 1)
    out = F.interpolate(grid, size=(2 * nh - 1, 2 * nw - 1), mode="bicubic", align_corners=False)
    return out.reshape(heads, -1).T.to(table.dtype).contiguous()


def shift_mask(
    h: int,
    w: int,
    window: int | Sequence[int],
    shift: int | Sequence[int],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Shifted-window attention mask (nW, N, N): 0 within a region, -100 across regions (upstream rule)."""
    wh, ww = as_window(window)
    sh, sw = as_window(shift)
    labels = torch.zeros(1, h, w, 1)
    count = 0
    for hs in (slice(0, -wh), slice(-wh, -sh), slice(-sh, None)):
        for ws in (slice(0, -ww), slice(-ww, -sw), slice(-sw, None)):
            labels[:, hs, ws, :] = count
            count += 1
    win = window_partition(labels, (wh, ww)).squeeze(-1)  # nW, N
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    mask = torch.zeros_like(diff).masked_fill(diff != 0, MASK_VALUE)
    return mask.to(device=device, dtype=dtype)


def window_order(
    h: int, w: int, window: int | Sequence[int], shift: int | Sequence[int], device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token permutations (forward, inverse) that fuse the cyclic shift with the window partition.

    ``tokens.index_select(1, forward).view(B·nW, N, C)`` equals roll(-shift) then window_partition of the (B, H·W, C)
    token sequence, and ``windows.view(B, H·W, C).index_select(1, inverse)`` undoes both: one gather each way
    instead of roll + permute copies.
    """
    wh, ww = as_window(window)
    sh, sw = as_window(shift)
    grid = torch.arange(h * w).view(1, h, w, 1)
    if sh or sw:
        grid = torch.roll(grid, shifts=(-sh, -sw), dims=(1, 2))
    forward = window_partition(grid, (wh, ww)).reshape(-1)
    inverse = torch.empty_like(forward)
    inverse[forward] = torch.arange(h * w)
    return forward.to(device), inverse.to(device)


class MaskCache:
    """Small LRU of shift masks and token orders shared by the blocks of one model (pure functions of their key).

    Upstream SwinIR rebuilds the mask in every block on every forward at non-training sizes; sharing one cache
    per model builds each (size, window, shift) once.
    """

    def __init__(self, maxsize: int = 32) -> None:
        self.maxsize = maxsize
        self._store: OrderedDict[tuple[object, ...], torch.Tensor] = OrderedDict()

    def get(
        self, h: int, w: int, window: tuple[int, int], shift: tuple[int, int], device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        if tracing():  # built in the graph from shapes, never cached; torch.export adds real values to analyse
            traced = shift_mask(h, w, window, shift, device=device, dtype=dtype)
            return with_real_twin(traced, lambda: shift_mask(h, w, window, shift, device=device, dtype=dtype))
        return self._get(h, w, window, shift, device, dtype)

    def _get(
        self, h: int, w: int, window: tuple[int, int], shift: tuple[int, int], device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        key = (h, w, window, shift, str(device), dtype)
        hit = self._store.get(key)
        if hit is not None:
            self._store.move_to_end(key)
            return hit
        with torch.inference_mode(False), torch.no_grad():  # a normal tensor even if built under inference_mode
            mask = shift_mask(h, w, window, shift, device=device, dtype=dtype)
        self._store[key] = mask
        while len(self._store) > self.maxsize:
            self._store.popitem(last=False)
        return mask

    def order(
        self, h: int, w: int, window: tuple[int, int], shift: tuple[int, int], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached :func:`window_order` for this size."""
        if tracing():
            return window_order(h, w, window, shift, device)
        key = ("order", h, w, window, shift, str(device))
        hit = self._store.get(key)
        if hit is not None:
            self._store.move_to_end(key)
            return hit  # type: ignore[return-value]
        with torch.inference_mode(False), torch.no_grad():
            value = window_order(h, w, window, shift, device)
        self._store[key] = value  # type: ignore[assignment]
        while len(self._store) > self.maxsize:
            self._store.popitem(last=False)
        return value

    def clear(self) -> None:
        self._store.clear()


def clamp_window(resolution: int, window: int, shift_wanted: bool) -> tuple[int, int]:
    """Upstream rule: a stage whose (constructor) resolution is <= window uses window = resolution, no shift."""
    if resolution <= window:
        return resolution, 0
    return window, (window // 2 if shift_wanted else 0)


class RelativeBiasCache:
    """Gathered relative-position bias per window, rebuilt only when the table changes.

    The key holds the table's storage pointer and in-place version counter, so load_state_dict or an optimizer
    step invalidates it; while autograd records (training) the bias is gathered fresh so gradients reach the table.
    """

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._value: torch.Tensor | None = None

    def get(
        self,
        table: torch.Tensor,
        index: torch.Tensor,
        trained: tuple[int, int],
        window: tuple[int, int],
        dtype: torch.dtype,
    ) -> torch.Tensor:
        recording = torch.is_grad_enabled() and table.requires_grad
        if recording or tracing():  # gradients reach the table; a trace gathers in the graph (no storage pointer)
            return self._build(table, index, trained, window, dtype)
        key = (window, table.device, dtype, table.data_ptr(), table._version)
        if key == self._key and self._value is not None:
            return self._value
        with torch.inference_mode(False), torch.no_grad():  # cached values stay normal (versioned) tensors
            bias = self._build(table, index, trained, window, dtype)
        self._key, self._value = key, bias
        return bias

    @staticmethod
    def _build(
        table: torch.Tensor, index: torch.Tensor, trained: tuple[int, int], window: tuple[int, int], dtype: torch.dtype
    ) -> torch.Tensor:
        if window == trained:
            bias = gather_bias(table, index)
        else:
            resized = resize_bias_table(table, trained, window)
            bias = gather_bias(resized, relative_position_index(window).to(table.device))
        return bias.to(dtype)


class BlockSequence(nn.Module):
    """Window-attention blocks applied in order on a token stream of a known size (state-dict prefix ``blocks.``)."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, size)
        return x


def tokens_to_image(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H·W, C) tokens as a (B, C, H, W) image without a copy: the view is channels-last, which convolutions
    accept directly (oneDNN's channels-last kernels; the output is channels-last too)."""
    b, _, c = x.shape
    return x.view(b, size[0], size[1], c).permute(0, 3, 1, 2)


def image_to_tokens(y: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> contiguous (B, H·W, C) tokens: a view for a channels-last image, else one copy."""
    b, c = y.shape[:2]
    return y.permute(0, 2, 3, 1).reshape(b, -1, c)
