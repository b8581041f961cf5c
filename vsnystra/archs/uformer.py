"""Uformer (Wang et al. 2022), written for vsnystra: loads the official Uformer-B checkpoints unchanged.

State-dict names, shapes and the forward match ZhendongWang6/Uformer ``model.py`` (LeWin blocks, LeFF, modulator,
'linear' or 'conv' token projection). Sizes are passed explicitly instead of upstream's sqrt(L), so the forward is the
same on square inputs and also defined on rectangles whose stages are window multiples.
The constructor ``img_size`` decides the per-stage window clamp (bottleneck shift on only if img_size > 128 at win 8).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vsnystra.archs.base import ModelInfo, RestorationModel, SizeRule, StateDict
from vsnystra.archs.common import BlockSequence, MaskCache
from vsnystra.archs.descriptor import Architecture, NystraDefaults
from vsnystra.archs.loading import construction_device, load_into, with_overrides
from vsnystra.archs.uformer_blocks import ConvWrap, InputProj, LeWinBlock, OutputProj

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


class Uformer(RestorationModel):
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
                self.add_module(f"upsample_{i - 5}", ConvWrap("deconv", deconv))
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
                self.add_module(f"dowsample_{i}", ConvWrap("conv", conv))

    def size_rule(self) -> SizeRule:
        """A square canvas whose side is a multiple of 128 and of every stage's window·2^level (current windows)."""
        need = 128
        for i, name in enumerate(STAGES):
            for blk in getattr(self, name).blocks:
                need = math.lcm(need, blk.window * 2 ** LEVEL[i])
        return SizeRule(multiple_of=need, padding="centred_square")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        need = self.size_rule().multiple_of
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


def detect(sd: StateDict) -> bool:
    return "input_proj.proj.0.weight" in sd and "encoderlayer_0.blocks.0.attn.relative_position_bias_table" in sd


def hyperparameters(sd: StateDict) -> dict[str, Any]:
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


def build(sd: StateDict, /, **overrides: object) -> Uformer:
    """Build Uformer from a canonical state dict and load it strictly; ``img_size`` sets the window clamp."""
    hp = with_overrides("Uformer", hyperparameters(sd), overrides)
    with construction_device(sd):
        model = Uformer(**hp)
    load_into(model, sd, ARCHITECTURE.name, hp, KNOWN)
    variant = next((n for n, cfg in KNOWN.items() if all(hp.get(k) == v for k, v in cfg.items())), "uformer")
    ws = int(hp["win_size"])
    model.info = ModelInfo(
        arch=ARCHITECTURE.name,
        kind=ARCHITECTURE.kind,
        variant=variant.split(" ")[0].lower(),
        task="restore",
        scale=1,
        in_channels=int(hp["dd_in"]),
        out_channels=int(hp["in_chans"]),
        window=(ws, ws),
        size_rule=model.size_rule(),
        hyperparameters=dict(hp),
    )
    return model


ARCHITECTURE = Architecture(
    name="uformer",
    filter_name="Uformer",
    kind="image",
    default_model="uformer-denoise-small",
    detect=detect,
    build=build,
    key_hint="input_proj + encoderlayer_*",
    # 8 iterations at the trained window: the truncated iteration regularises the nearly singular landmark kernel of
    # 8x8 windows; 6 left more error and many more iterations were worse (README, "Usage").
    nystra_trained=NystraDefaults(landmarks=32, iters=8, threshold=None),
    nystra_paper=NystraDefaults(landmarks=32, iters=6, threshold=0.0),
    paper_window=64,
    gray=True,
)
