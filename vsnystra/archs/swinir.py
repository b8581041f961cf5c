"""SwinIR (Liang et al. 2021), written for vsnystra: loads every official checkpoint unchanged.

State-dict names, shapes and the forward match JingyunLiang/SwinIR ``network_swinir.py``; the window attention of
every block goes through the seam :func:`vsnystra.attention.attention` and can be reconfigured by
:func:`vsnystra.patch_attention` (other spec, enlarged window, bias/mask dropped).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vsnystra.archs.base import AttentionConfig, ModelInfo, RestorationModel, SizeRule, StateDict
from vsnystra.archs.common import MaskCache, clamp_window, tokens_to_image
from vsnystra.archs.descriptor import Architecture, NystraDefaults
from vsnystra.archs.loading import construction_device, load_into, with_overrides
from vsnystra.archs.swinir_blocks import RSTB, PatchEmbed, SwinTransformerBlock, resi_conv

RGB_MEAN = (0.4488, 0.4371, 0.4040)


class SwinIR(RestorationModel):
    """SwinIR with upstream constructor arguments (patch_size 1, no absolute position embedding)."""

    def __init__(
        self,
        *,
        img_size: int = 64,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6),
        window_size: int = 7,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        patch_norm: bool = True,
        upscale: int = 2,
        img_range: float = 1.0,
        upsampler: str = "",
        resi_connection: str = "1conv",
        store_masks: bool = True,
    ) -> None:
        super().__init__()
        self.img_size = img_size
        self.upscale = upscale
        self.upsampler = upsampler
        self.img_range = img_range
        self.window_size = window_size
        self.trained_window = window_size
        mean = torch.tensor(RGB_MEAN).view(1, 3, 1, 1) if in_chans == 3 else torch.zeros(1, 1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.masks = MaskCache()
        num_feat = 64
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim, patch_norm)
        self.layers = nn.ModuleList()
        for depth, heads in zip(depths, num_heads, strict=True):
            blocks = [
                SwinTransformerBlock(
                    embed_dim, img_size, heads, window_size, j % 2 == 1, mlp_ratio, qkv_bias, self.masks, store_masks
                )
                for j in range(depth)
            ]
            self.layers.append(RSTB(blocks, embed_dim, resi_connection))
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = resi_conv(embed_dim, resi_connection)
        if upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(
                nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True)
            )
            self.upsample = _pixelshuffle(upscale, num_feat)
            self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
        elif upsampler == "pixelshuffledirect":
            self.upsample = nn.Sequential(
                nn.Conv2d(embed_dim, upscale**2 * in_chans, 3, 1, 1), nn.PixelShuffle(upscale)
            )
        elif upsampler == "nearest+conv":
            if upscale not in (2, 4):
                raise ValueError(f"SwinIR: 'nearest+conv' supports x2 and x4, got x{upscale}")
            self.conv_before_upsample = nn.Sequential(
                nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True)
            )
            self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            if upscale == 4:
                self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
            self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        elif upsampler == "":
            self.conv_last = nn.Conv2d(embed_dim, in_chans, 3, 1, 1)
        else:
            raise ValueError(f"SwinIR: unknown upsampler {upsampler!r}")

    def configure_attention(self, cfg: AttentionConfig) -> None:
        """Follow the blocks' (possibly enlarged) window, which the size rule pads to."""
        want = self.trained_window if cfg.window is None else cfg.window
        self.window_size = int(want if isinstance(want, int) else max(want))

    def size_rule(self) -> SizeRule:
        """Sides padded to the window; at the trained window a stage clamped to img_size pads to that instead."""
        size = self.window_size
        multiple = size if size != self.trained_window else clamp_window(self.img_size, size, False)[0]
        return SizeRule(multiple_of=multiple, padding="mirror_past")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = self.patch_embed(x)
        for layer in self.layers:
            y = layer(y, (h, w))
        return tokens_to_image(self.norm(y), (h, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.size_rule().multiple_of
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        mean: torch.Tensor = self.mean.to(x.dtype)  # type: ignore[operator,assignment]
        x = (x - mean) * self.img_range
        if self.upsampler == "":
            first = self.conv_first(x)
            res = self.conv_after_body(self.forward_features(first)) + first
            x = x + self.conv_last(res)
        else:
            x = self.conv_first(x)
            x = self.conv_after_body(self.forward_features(x)) + x
            if self.upsampler == "pixelshuffle":
                x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
            elif self.upsampler == "pixelshuffledirect":
                x = self.upsample(x)
            else:
                x = self.conv_before_upsample(x)
                x = self.lrelu(self.conv_up1(F.interpolate(x, scale_factor=2, mode="nearest")))
                if self.upscale == 4:
                    x = self.lrelu(self.conv_up2(F.interpolate(x, scale_factor=2, mode="nearest")))
                x = self.conv_last(self.lrelu(self.conv_hr(x)))
        x = x / self.img_range + mean
        return x[..., : h * self.upscale, : w * self.upscale]


def _pixelshuffle(scale: int, num_feat: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    if scale & (scale - 1) == 0:
        for _ in range(int(math.log2(scale))):
            mods += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
    elif scale == 3:
        mods += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
    else:
        raise ValueError(f"SwinIR: pixelshuffle supports scales 2^n and 3, got {scale}")
    return nn.Sequential(*mods)


# --------------------------------------------------------------------------------------------------------------
# detection and hyper-parameters from a state dict

_TABLE = "layers.{i}.residual_group.blocks.{j}.attn.relative_position_bias_table"


def detect(sd: StateDict) -> bool:
    """SwinIR: conv_first + RSTB layers; Swin2SR/HAT-like keys (logit_scale, cpb_mlp, conv_block) excluded."""
    if "conv_first.weight" not in sd or _TABLE.format(i=0, j=0) not in sd:
        return False
    return not any(("logit_scale" in k or "cpb_mlp" in k or "conv_block" in k) for k in sd)


def hyperparameters(sd: StateDict) -> dict[str, Any]:
    """Read the constructor arguments from key names and tensor shapes (spandrel's approach)."""
    embed_dim, in_chans = (int(s) for s in sd["conv_first.weight"].shape[:2])
    depths: list[int] = []
    heads: list[int] = []
    i = 0
    while _TABLE.format(i=i, j=0) in sd:
        j = 0
        while _TABLE.format(i=i, j=j) in sd:
            j += 1
        depths.append(j)
        heads.append(int(sd[_TABLE.format(i=i, j=0)].shape[1]))
        i += 1
    rows = int(sd[_TABLE.format(i=0, j=0)].shape[0])
    window = (math.isqrt(rows) + 1) // 2
    mask_key = next((k for k in sd if k.endswith(".attn_mask")), None)
    img_size = 64
    if mask_key is not None:
        img_size = math.isqrt(int(sd[mask_key].shape[0])) * window
    fc1 = sd.get("layers.0.residual_group.blocks.0.mlp.fc1.weight")
    mlp_ratio = float(fc1.shape[0]) / embed_dim if fc1 is not None else 2.0
    if "conv_up1.weight" in sd:
        upsampler = "nearest+conv"
        upscale = 4 if "conv_up2.weight" in sd else 2
    elif "conv_before_upsample.0.weight" in sd:
        upsampler = "pixelshuffle"
        convs = [k for k in sd if k.startswith("upsample.") and k.endswith(".weight")]
        first = sd.get("upsample.0.weight")
        if len(convs) == 1 and first is not None and first.shape[0] == 9 * first.shape[1]:
            upscale = 3
        else:
            upscale = 2 ** len(convs)
    elif "upsample.0.weight" in sd:
        upsampler = "pixelshuffledirect"
        upscale = math.isqrt(int(sd["upsample.0.weight"].shape[0]) // in_chans)
    else:
        upsampler, upscale = "", 1
    return {
        "img_size": img_size,
        "in_chans": in_chans,
        "embed_dim": embed_dim,
        "depths": depths,
        "num_heads": heads,
        "window_size": window,
        "mlp_ratio": mlp_ratio,
        "qkv_bias": "layers.0.residual_group.blocks.0.attn.qkv.bias" in sd,
        "patch_norm": "patch_embed.norm.weight" in sd,
        "upscale": upscale,
        "img_range": 255.0 if window == 7 else 1.0,
        "upsampler": upsampler,
        "resi_connection": "3conv" if "conv_after_body.0.weight" in sd else "1conv",
        "store_masks": mask_key is not None,
    }


# Released configurations (main_test_swinir.py define_model), used to name the closest one in load errors.
KNOWN: dict[str, dict[str, Any]] = {
    "001 classicalSR SwinIR-M": {"embed_dim": 180, "depths": [6] * 6, "window_size": 8, "upsampler": "pixelshuffle"},
    "002 lightweightSR SwinIR-S": {
        "embed_dim": 60,
        "depths": [6] * 4,
        "window_size": 8,
        "upsampler": "pixelshuffledirect",
    },
    "003 realSR SwinIR-M": {"embed_dim": 180, "depths": [6] * 6, "window_size": 8, "upsampler": "nearest+conv"},
    "003 realSR SwinIR-L": {
        "embed_dim": 240,
        "depths": [6] * 9,
        "window_size": 8,
        "upsampler": "nearest+conv",
        "resi_connection": "3conv",
    },
    "004/005 denoising SwinIR-M": {"embed_dim": 180, "depths": [6] * 6, "window_size": 8, "upsampler": ""},
    "006 JPEG CAR SwinIR-M": {"embed_dim": 180, "depths": [6] * 6, "window_size": 7, "upsampler": ""},
}


def _variant(hp: Mapping[str, Any]) -> tuple[str, Literal["sr", "denoise", "car"]]:
    up = hp["upsampler"]
    if up == "pixelshuffle":
        return "classical_sr", "sr"
    if up == "pixelshuffledirect":
        return "lightweight_sr", "sr"
    if up == "nearest+conv":
        return "real_sr", "sr"
    if hp["window_size"] == 7 or hp["img_range"] == 255.0:
        return "car", "car"
    return ("gray_dn" if hp["in_chans"] == 1 else "color_dn"), "denoise"


def build(sd: StateDict, /, **overrides: object) -> SwinIR:
    """Build SwinIR from a canonical state dict and load it strictly (see loading.load_into)."""
    hp = with_overrides("SwinIR", hyperparameters(sd), overrides)
    with construction_device(sd):
        model = SwinIR(**hp)
    load_into(model, sd, ARCHITECTURE.name, hp, KNOWN)
    variant, task = _variant(hp)
    ws = int(hp["window_size"])
    model.info = ModelInfo(
        arch=ARCHITECTURE.name,
        kind=ARCHITECTURE.kind,
        variant=variant,
        task=task,
        scale=int(hp["upscale"]),
        in_channels=int(hp["in_chans"]),
        out_channels=int(hp["in_chans"]),
        window=(ws, ws),
        size_rule=model.size_rule(),
        hyperparameters=dict(hp),
    )
    return model


ARCHITECTURE = Architecture(
    name="swinir",
    filter_name="SwinIR",
    kind="image",
    default_model="swinir-x2-small",
    detect=detect,
    build=build,
    key_hint="conv_first + layers.*.residual_group",
    nystra_trained=NystraDefaults(landmarks=16, iters=6, threshold=None),
    nystra_paper=NystraDefaults(landmarks=16, iters=2, threshold=5.0),
    paper_window=32,
    gray=True,
)
