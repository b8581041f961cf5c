"""Uformer (Wang et al. 2022), written for vsnystra: loads the official Uformer-B checkpoints unchanged.

State-dict names, shapes and the forward match ZhendongWang6/Uformer ``model.py`` (LeWin blocks, LeFF, modulator,
'linear' or 'conv' token projection). Sizes are passed explicitly instead of upstream's sqrt(L), so the forward is the
same on square inputs and also defined on rectangles whose stages are window multiples.
The constructor ``img_size`` decides the per-stage window clamp (bottleneck shift on only if img_size > 128 at win 8).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from vsnystra.archs import fused
from vsnystra.archs.base import AttentionConfig, ModelInfo
from vsnystra.archs.common import (
    BlockSequence,
    MaskCache,
    RelativeBiasCache,
    clamp_window,
    image_to_tokens,
    relative_position_index,
    tokens_to_image,
)
from vsnystra.archs.fused import Linear, conv_gelu, linear_gelu
from vsnystra.attention import attention
from vsnystra.attention.specs import AttentionSpec, Exact

NAME = "uformer"
STAGES = (
    "encoderlayer_0",
    "encoderlayer_1",
    "encoderlayer_2",
    "encoderlayer_3",
    "conv",
    "decoderlayer_0",
    "decoderlayer_1",
    "decoderlayer_2",
    "decoderlayer_3",
)
LEVEL = (0, 1, 2, 3, 4, 3, 2, 1, 0)  # downsampling level of each stage
DIM_MULT = (1, 2, 4, 8, 16, 16, 8, 4, 2)


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


class Mlp(fused.Mlp):
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


class _ConvWrap(nn.Module):
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


class Uformer(nn.Module):
    """Uformer with the upstream constructor arguments (no cross-modulator, no FastLeFF)."""

    def __init__(
        self,
        *,
        img_size: int = 128,
        in_chans: int = 3,
        dd_in: int = 3,
        embed_dim: int = 32,
        depths: Sequence[int] = (1, 2, 8, 8, 2, 8, 8, 2, 1),
        num_heads: Sequence[int] = (1, 2, 4, 8, 16, 16, 8, 4, 2),
        win_size: int = 8,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        token_projection: str = "linear",
        token_mlp: str = "leff",
        shift_flag: bool = True,
        modulator: bool = True,
    ) -> None:
        super().__init__()
        if len(depths) != 9 or len(num_heads) != 9:
            raise ValueError(f"Uformer: depths and num_heads need 9 entries, got {list(depths)}, {list(num_heads)}")
        self.img_size = img_size
        self.dd_in = dd_in
        self.masks = MaskCache()
        self.input_proj = InputProj(dd_in, embed_dim)
        self.output_proj = OutputProj(2 * embed_dim, in_chans)
        ups = {5: (16, 8), 6: (16, 4), 7: (8, 2), 8: (4, 1)}  # decoder input/output channels / embed_dim
        for i, name in enumerate(STAGES):
            dim = embed_dim * DIM_MULT[i]
            res = img_size // 2 ** LEVEL[i]
            if i in ups:  # registration order = upstream state_dict() order
                cin, cout = ups[i]
                deconv = nn.ConvTranspose2d(embed_dim * cin, embed_dim * cout, 2, 2)
                self.add_module(f"upsample_{i - 5}", _ConvWrap("deconv", deconv))
            blocks = [
                LeWinBlock(
                    dim,
                    res,
                    num_heads[i],
                    win_size,
                    shift_flag and j % 2 == 1,
                    mlp_ratio,
                    qkv_bias,
                    token_projection,
                    token_mlp,
                    modulator and i >= 5,
                    self.masks,
                )
                for j in range(depths[i])
            ]
            self.add_module(name, BlockSequence(blocks))
            if i < 4:
                conv = nn.Conv2d(dim, 2 * dim, 4, 2, 1)
                self.add_module(f"dowsample_{i}", _ConvWrap("conv", conv))

    def size_multiple(self) -> int:
        """Side multiple the current (possibly patched) windows need: lcm of 128 and every stage's window·2^level."""
        need = 128
        for i, name in enumerate(STAGES):
            for blk in getattr(self, name).blocks:
                need = math.lcm(need, blk.window * 2 ** LEVEL[i])
        return need

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        need = self.size_multiple()
        if h % need or w % need:
            raise ValueError(
                f"Uformer: input sides must be multiples of {need} (16x downsampling x window), got {h}x{w}; "
                "use vsnystra.restore_image, which pads as the official test (expand2square)"
            )
        sizes = [(h >> lv, w >> lv) for lv in range(5)]
        y = self.input_proj(x)
        skips = []
        for i in range(4):
            y = getattr(self, STAGES[i])(y, sizes[i])
            skips.append(y)
            y = getattr(self, f"dowsample_{i}")(y, sizes[i])
        y = getattr(self, STAGES[4])(y, sizes[4])
        for i in range(4):
            lv = 3 - i
            y = getattr(self, f"upsample_{i}")(y, sizes[lv + 1])
            y = torch.cat([y, skips[lv]], -1)
            y = getattr(self, f"decoderlayer_{i}")(y, sizes[lv])
        out = self.output_proj(y, sizes[0])
        return x + out if self.dd_in == 3 else out


# --------------------------------------------------------------------------------------------------------------
# detection and hyper-parameters from a state dict


def detect(sd: Mapping[str, Any]) -> bool:
    return "input_proj.proj.0.weight" in sd and "encoderlayer_0.blocks.0.attn.relative_position_bias_table" in sd


def hyperparameters(sd: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments from key names and shapes; img_size (not in the weights) defaults to 128."""
    embed_dim, dd_in = (int(s) for s in sd["input_proj.proj.0.weight"].shape[:2])
    depths: list[int] = []
    heads: list[int] = []
    windows: list[int] = []
    for name in STAGES:
        j = 0
        while f"{name}.blocks.{j}.norm1.weight" in sd:
            j += 1
        depths.append(j)
        table = sd.get(f"{name}.blocks.0.attn.relative_position_bias_table")
        heads.append(int(table.shape[1]) if table is not None else 1)
        windows.append((math.isqrt(int(table.shape[0])) + 1) // 2 if table is not None else 0)
    win = max(windows)
    img_size = 128
    # a stage clamped below the window reveals the training img_size (resolution = its table's window)
    for lv, ws in zip(LEVEL, windows, strict=True):
        if 0 < ws < win:
            img_size = ws * 2**lv
            break
    b0 = "encoderlayer_0.blocks.0."
    if f"{b0}mlp.linear1.0.weight" in sd:
        token_mlp, hidden = "leff", int(sd[f"{b0}mlp.linear1.0.weight"].shape[0])
    else:
        token_mlp = "mlp"
        fc1 = sd.get(f"{b0}mlp.fc1.weight")
        hidden = int(fc1.shape[0]) if fc1 is not None else 4 * embed_dim
    conv = f"{b0}attn.qkv.to_q.depthwise.weight" in sd
    return {
        "img_size": img_size,
        "in_chans": int(sd["output_proj.proj.0.weight"].shape[0]),
        "dd_in": dd_in,
        "embed_dim": embed_dim,
        "depths": depths,
        "num_heads": heads,
        "win_size": win,
        "mlp_ratio": hidden / embed_dim,
        "qkv_bias": conv or f"{b0}attn.qkv.to_q.bias" in sd,
        "token_projection": "conv" if conv else "linear",
        "token_mlp": token_mlp,
        "shift_flag": True,
        "modulator": any(k.endswith(".modulator.weight") for k in sd),
    }


KNOWN: dict[str, dict[str, Any]] = {
    "Uformer_B": {"embed_dim": 32, "depths": [1, 2, 8, 8, 2, 8, 8, 2, 1], "win_size": 8, "modulator": True},
    "Uformer_T": {"embed_dim": 16, "depths": [2] * 9, "win_size": 8, "modulator": True},
    "Uformer16/32 (pre-CVPR)": {"depths": [2] * 9, "win_size": 8, "modulator": False},
}


def build(sd: Mapping[str, Any], **overrides: Any) -> nn.Module:
    """Build Uformer from a canonical state dict and load it strictly; ``img_size`` sets the window clamp."""
    from vsnystra.archs.registry import construction_device, load_into

    hp = hyperparameters(sd)
    unknown = set(overrides) - set(hp)
    if unknown:
        raise TypeError(f"load_model: unknown Uformer override(s) {sorted(unknown)}; allowed: {sorted(hp)}")
    hp.update(overrides)
    with construction_device(sd):
        model = Uformer(**hp)
    load_into(model, sd, NAME, hp, KNOWN)
    variant = next((n for n, cfg in KNOWN.items() if all(hp.get(k) == v for k, v in cfg.items())), "uformer")
    ws = int(hp["win_size"])
    model.info = ModelInfo(  # type: ignore[assignment]
        arch="uformer",
        variant=variant.split(" ")[0].lower(),
        task="restore",
        scale=1,
        in_channels=int(hp["dd_in"]),
        out_channels=int(hp["in_chans"]),
        window=(ws, ws),
        multiple_of=model.size_multiple(),
        square=True,
        hyperparameters=dict(hp),
    )
    return model
