"""RVRT (Liang et al. 2022, recurrent video restoration transformer): our implementation, CPU and CUDA.

Official checkpoints (``{'params': state_dict}``, SpyNet inside) load unchanged: video SR (REDS, Vimeo BI/BD),
deblurring (DVD, GoPro) and non-blind denoising (DAVIS, 4th input channel = sigma/255 map, added by
``restore_video``). Guided deformable attention runs in pure PyTorch (:mod:`vsnystra.archs.rvrt_gda`); the STL
window attention goes through the seam (:mod:`vsnystra.archs.rvrt_blocks`).

Forward: ``model(lqs)`` with lqs (n, t, c, h, w), t a multiple of the clip size (2); returns (n, t, 3, s*h, s*w).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vsnystra.archs.base import ModelInfo, RestorationModel, SizeRule, StateDict
from vsnystra.archs.descriptor import Architecture, NystraDefaults
from vsnystra.archs.layers import FrameConv3d, Permute
from vsnystra.archs.loading import construction_device, load_into, with_overrides
from vsnystra.archs.rvrt_blocks import RSTBWithInputConv, Upsample4
from vsnystra.archs.rvrt_gda import GuidedDeformAttnPack
from vsnystra.archs.spynet import SpyNet, flow_warp
from vsnystra.attention.tracing import tracing

log = logging.getLogger(__name__)

BRANCHES = ("backward_1", "forward_1", "backward_2", "forward_2")


class RVRT(RestorationModel):
    """RVRT with upstream module names; hyper-parameters as in upstream's constructor."""

    def __init__(
        self,
        *,
        upscale: int = 4,
        clip_size: int = 2,
        window_size: tuple[int, int, int] = (2, 8, 8),
        num_blocks: tuple[int, int, int] = (1, 2, 1),
        depths: tuple[int, int, int] = (2, 2, 2),
        embed_dims: tuple[int, int, int] = (144, 144, 144),
        num_heads: tuple[int, int, int] = (6, 6, 6),
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        inputconv_groups: tuple[int, ...] = (1, 1, 1, 1, 1, 1),
        max_residue_magnitude: float = 10.0,
        deformable_groups: int = 12,
        attention_heads: int = 12,
        attention_window: tuple[int, int] = (3, 3),
        nonblind_denoising: bool = False,
    ) -> None:
        super().__init__()
        if upscale not in (1, 4):
            raise ValueError(f"RVRT: upscale must be 1 or 4, got {upscale}")
        self.upscale = upscale
        self.clip_size = clip_size
        self.nonblind_denoising = nonblind_denoising
        c0, c1, c2 = embed_dims
        win1 = (1, window_size[1], window_size[2])
        self.spynet = SpyNet()

        def rstb(in_ch: int, dim: int, groups: int, blocks: int, stage: int, win: tuple[int, int, int]) -> Any:
            return RSTBWithInputConv(
                in_ch,
                dim,
                groups=groups,
                num_blocks=blocks,
                depth=depths[stage],
                heads=num_heads[stage],
                window=win,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
            )

        self.feat_extract: nn.Module
        if upscale == 4:
            self.feat_extract = rstb(3, c0, inputconv_groups[0], num_blocks[0], 0, win1)
        else:
            in_ch = 4 if nonblind_denoising else 3
            self.feat_extract = nn.Sequential(
                Permute(0, 2, 1, 3, 4),
                FrameConv3d(in_ch, c0, (1, 3, 3), (1, 2, 2), (0, 1, 1)),
                nn.LeakyReLU(0.1, inplace=True),
                FrameConv3d(c0, c0, (1, 3, 3), (1, 2, 2), (0, 1, 1)),
                nn.LeakyReLU(0.1, inplace=True),
                Permute(0, 2, 1, 3, 4),
                rstb(c0, c0, inputconv_groups[0], num_blocks[0], 0, win1),
            )
        self.backbone = nn.ModuleDict()
        self.deform_align = nn.ModuleDict()
        for i, name in enumerate(BRANCHES):
            self.deform_align[name] = GuidedDeformAttnPack(
                c1,
                clip=clip_size,
                groups=deformable_groups,
                heads=attention_heads,
                kernel=attention_window,
                max_residue_magnitude=max_residue_magnitude,
            )
            self.backbone[name] = rstb((2 + i) * c0, c1, inputconv_groups[i + 1], num_blocks[1], 1, window_size)
        self.reconstruction = rstb(5 * c0, c2, inputconv_groups[5], num_blocks[2], 2, win1)
        self.conv_before_upsampler = nn.Sequential(FrameConv3d(c2, 64, kernel_size=(1, 1, 1)), nn.LeakyReLU(0.1, True))
        self.upsampler = Upsample4(64)
        self.conv_last = FrameConv3d(64, 3, kernel_size=(1, 3, 3), padding=(0, 1, 1))

    def size_rule(self) -> SizeRule:
        """Frames mirror-padded to a multiple of 8 (the official whole-frame rule; STLs pad larger windows inside).

        SpyNet needs flow frames larger than 32 px; deblurring and denoising compute flows at 1/4 size, so their
        frames need more than 128 px per side.
        """
        flow_side = 33 if self.upscale == 4 else 4 * 32 + 1
        return SizeRule(multiple_of=8, padding="mirror_to", min_side=flow_side)

    # -- flows ---------------------------------------------------------------------------------------------
    def compute_flows(self, lqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(forward, backward) flows (n, t-1, 2, h, w); a mirror-extended clip reuses the backward flows."""
        n, t, c, h, w = lqs.shape
        a = lqs[:, :-1].reshape(-1, c, h, w)
        b = lqs[:, 1:].reshape(-1, c, h, w)
        backward = self.spynet(a, b).view(n, t - 1, 2, h, w)
        # a trace has no values to compare: it always computes the forward flows (equal within rounding)
        mirrored = not tracing() and t % 2 == 0 and bool(torch.equal(lqs[:, : t // 2], lqs[:, t // 2 :].flip(1)))
        forward = backward.flip(1) if mirrored else self.spynet(b, a).view(n, t - 1, 2, h, w)
        return forward, backward

    # -- recurrence ----------------------------------------------------------------------------------------
    def _propagate(
        self,
        feats: dict[str, list[torch.Tensor]],
        flows: torch.Tensor | None,
        name: str,
        updated: dict[str, list[torch.Tensor]],
    ) -> None:
        backward = name.startswith("backward")
        first = name.endswith("_1")
        clips = len(feats["shallow"])
        clip_idx = list(range(clips))[::-1] if backward else list(range(clips))
        nframes = clips * self.clip_size
        flow_idx = list(range(nframes))[::-1] if backward else list(range(-1, nframes - 1))
        if first:
            updated[f"{name}_n1"] = []
            updated[f"{name}_n2"] = []
        prev = list(feats)[-2]
        feat_prop = torch.zeros_like(feats["shallow"][0])
        out: list[torch.Tensor] = []
        cs = self.clip_size
        for i, ic in enumerate(clip_idx):
            if i > 0:
                if first:
                    assert flows is not None
                    f01 = flows[:, flow_idx[cs * i - 1]]
                    f12 = flows[:, flow_idx[cs * i]]
                    f23 = flows[:, flow_idx[cs * i + 1]]
                    f02 = f12 + flow_warp(f01, f12.permute(0, 2, 3, 1))
                    f13 = f23 + flow_warp(f12, f23.permute(0, 2, 3, 1))
                    f03 = f23 + flow_warp(f02, f23.permute(0, 2, 3, 1))
                    flow_n1 = torch.stack([f02, f13], 1)
                    flow_n2 = torch.stack([f12, f03], 1)
                else:
                    old = name.replace("_2", "_1")
                    flow_n1 = updated[f"{old}_n1"][i - 1]
                    flow_n2 = updated[f"{old}_n2"][i - 1]
                feat_q = feats[prev][ic]
                feat_k = feats[prev][clip_idx[i - 1]]
                if backward:
                    feat_q, feat_k = feat_q.flip(1), feat_k.flip(1)
                n, t, c, h, w = feat_prop.shape
                warped1 = flow_warp(feat_prop.flatten(0, 1), flow_n1.permute(0, 1, 3, 4, 2).flatten(0, 1))
                warped2 = flow_warp(feat_prop.flip(1).flatten(0, 1), flow_n2.permute(0, 1, 3, 4, 2).flatten(0, 1))
                warped = [warped1.view(n, t, c, h, w), warped2.view(n, t, c, h, w)]
                feat_prop, new1, new2 = self.deform_align[name](
                    feat_q, feat_k, feat_prop, warped, [flow_n1, flow_n2], first
                )
                if first:
                    assert new1 is not None and new2 is not None
                    updated[f"{name}_n1"].append(new1)
                    updated[f"{name}_n2"].append(new2)
            parts = [feats[k][ic] for k in feats if k != name]
            if backward:
                parts = [p.flip(1) for p in parts]
            feat_prop = feat_prop + self.backbone[name](torch.cat([*parts, feat_prop], dim=2))
            out.append(feat_prop)
        if backward:
            out = [f.flip(1) for f in out[::-1]]
        feats[name] = out

    def _reconstruct(self, lq: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        """Output for frames whose five feature maps are ``feats`` (n, d, C, h, w) and inputs ``lq``."""
        hr = self.reconstruction(torch.cat(feats, dim=2))
        hr = self.conv_last(self.upsampler(self.conv_before_upsampler(hr.transpose(1, 2)))).transpose(1, 2)
        return hr + F.interpolate(lq, size=hr.shape[-3:], mode="trilinear", align_corners=False)

    def forward(self, lqs: torch.Tensor) -> torch.Tensor:
        n, t, c, h, w = lqs.shape
        expected = 4 if self.nonblind_denoising else 3
        if c != expected:
            raise ValueError(f"RVRT.forward: expected {expected} input channels, got {c}")
        if t % self.clip_size:
            raise ValueError(
                f"RVRT.forward: frame count {t} must be a multiple of {self.clip_size}; "
                "use vsnystra.restore_video, which pads time by mirroring"
            )
        if self.upscale == 4:
            lqs_down = lqs
        else:
            if h % 4 or w % 4:
                raise ValueError(f"RVRT.forward: frame size {h}x{w} must be a multiple of 4 (use restore_video)")
            lqs_down = F.interpolate(lqs[:, :, :3].reshape(-1, 3, h, w), scale_factor=0.25, mode="bicubic")
            lqs_down = lqs_down.view(n, t, 3, h // 4, w // 4)
        clips = t // self.clip_size
        feats: dict[str, list[torch.Tensor]] = {"shallow": list(torch.chunk(self.feat_extract(lqs), clips, dim=1))}
        flows_f: torch.Tensor | None = None
        flows_b: torch.Tensor | None = None
        if clips > 1:
            flows_f, flows_b = self.compute_flows(lqs_down)
        updated: dict[str, list[torch.Tensor]] = {}
        for name in BRANCHES:
            feats[name] = []
            self._propagate(feats, flows_b if name.startswith("backward") else flows_f, name, updated)
        lq3 = lqs[:, :, :3]
        outs = []
        for ic in range(clips):
            sl = slice(ic * self.clip_size, (ic + 1) * self.clip_size)
            outs.append(self._reconstruct(lq3[:, sl], [feats[k][ic] for k in feats]))
        return torch.cat(outs, dim=1)


# -- detection and building from a state dict ---------------------------------------------------------------
def detect(sd: StateDict) -> bool:
    """RVRT checkpoints carry SpyNet and the four guided-deformable-attention branches."""
    return "spynet.basic_module.0.basic_module.0.weight" in sd and any(
        k.startswith("deform_align.backward_1.conv_offset.") for k in sd
    )


def _count(sd: StateDict, prefix: str, suffix: str) -> int:
    n = 0
    while f"{prefix}{n}{suffix}" in sd:
        n += 1
    return n


def _shape(sd: StateDict, key: str) -> tuple[int, ...]:
    if key not in sd:
        raise KeyError(f"rvrt.build: state dict lacks {key!r}; is this an official RVRT checkpoint?")
    return tuple(sd[key].shape)


def _window(sd: StateDict, prefix: str) -> tuple[int, int, int]:
    """(Wd, Wh, Ww) from the bias table rows (2Wd-1)(2Wh-1)(2Ww-1) and the index size Wd*Wh*Ww (Wh = Ww)."""
    rows = _shape(sd, prefix + "relative_position_bias_table")[0]
    n = _shape(sd, prefix + "relative_position_index")[0]
    for wd in range(1, n + 1):
        if n % wd:
            continue
        side = round((n // wd) ** 0.5)
        if side * side * wd == n and (2 * wd - 1) * (2 * side - 1) ** 2 == rows:
            return (wd, side, side)
    raise ValueError(f"rvrt.build: cannot infer the window from {prefix} (table rows {rows}, tokens {n})")


def infer_config(sd: StateDict) -> dict[str, Any]:
    """Constructor arguments read from tensor shapes."""
    vsr = "feat_extract.main.1.weight" in sd
    fe = "feat_extract.main." if vsr else "feat_extract.6.main."
    c0 = _shape(sd, fe + "1.weight")[0]
    c1 = _shape(sd, "backbone.backward_1.main.1.weight")[0]
    c2 = _shape(sd, "reconstruction.main.1.weight")[0]
    in0 = 3 if vsr else c0
    groups = [in0 // _shape(sd, fe + "1.weight")[1]]
    for i, name in enumerate(BRANCHES):
        groups.append((2 + i) * c0 // _shape(sd, f"backbone.{name}.main.1.weight")[1])
    groups.append(5 * c0 // _shape(sd, "reconstruction.main.1.weight")[1])
    blocks = [
        _count(sd, fe + "5.", ".linear.weight"),
        _count(sd, "backbone.backward_1.main.5.", ".linear.weight"),
        _count(sd, "reconstruction.main.5.", ".linear.weight"),
    ]
    stems = [fe + "5.0.residual_group.blocks.", "backbone.backward_1.main.5.0.residual_group.blocks."]
    stems.append("reconstruction.main.5.0.residual_group.blocks.")
    depths = [_count(sd, s, ".norm1.weight") for s in stems]
    heads = [_shape(sd, s + "0.attn.relative_position_bias_table")[1] for s in stems]
    window = _window(sd, stems[1] + "0.attn.")
    mlp_ratio = _shape(sd, stems[1] + "0.mlp.fc1.weight")[0] / c1
    off0 = _shape(sd, "deform_align.backward_1.conv_offset.0.weight")[1]
    clip = (off0 - c1) // (c1 + 2)
    off_out = _shape(sd, "deform_align.backward_1.conv_offset.10.weight")[0]
    taps = 9
    nonblind = not vsr and _shape(sd, "feat_extract.1.weight")[1] == 4
    return {
        "upscale": 4 if vsr else 1,
        "clip_size": clip,
        "window_size": window,
        "num_blocks": tuple(blocks),
        "depths": tuple(depths),
        "embed_dims": (c0, c1, c2),
        "num_heads": tuple(heads),
        "mlp_ratio": mlp_ratio,
        "qkv_bias": stems[1] + "0.attn.qkv_self.bias" in sd,
        "inputconv_groups": tuple(groups),
        "deformable_groups": off_out // (clip * taps * 2),
        "attention_heads": 12,
        "attention_window": (3, 3),
        "nonblind_denoising": nonblind,
    }


def build(sd: StateDict, /, **overrides: object) -> RVRT:
    """Build an RVRT from an official state dict (hyper-parameters from shapes), load strictly, eval()."""
    cfg = with_overrides("RVRT", infer_config(sd), overrides)
    with construction_device(sd):
        model = RVRT(**cfg)
    load_into(model, sd, ARCHITECTURE.name, cfg)
    task: Literal["sr", "denoise", "deblur"]
    if cfg["upscale"] == 4:
        task, variant = "sr", "video_sr"
    elif cfg["nonblind_denoising"]:
        task, variant = "denoise", "video_denoise"
    else:
        task, variant = "deblur", "video_deblur"
    model.info = ModelInfo(
        arch=ARCHITECTURE.name,
        kind=ARCHITECTURE.kind,
        variant=variant,
        task=task,
        scale=cfg["upscale"],
        in_channels=3,
        out_channels=3,
        window=tuple(cfg["window_size"]),
        size_rule=model.size_rule(),
        needs_sigma=bool(cfg["nonblind_denoising"]),
        hyperparameters=dict(cfg),
    )
    log.debug("rvrt: built %s with %s", variant, cfg)
    return model


ARCHITECTURE = Architecture(
    name="rvrt",
    filter_name="RVRT",
    kind="video",
    default_model="rvrt-denoise-small",
    detect=detect,
    build=build,
    key_hint="spynet + deform_align + backbone",
    nystra_trained=NystraDefaults(landmarks=32, iters=6, threshold=None),
    nystra_paper=NystraDefaults(landmarks=32, iters=6, threshold=0.0),
    paper_window=(2, 64, 64),
    window_lengths=(2, 3),
    window_hint=" ([h, w] or [t, h, w], e.g. [64, 64])",
    tile_multiple=8,
    # the recurrent, deformable alignment lost 0.6 dB in bf16 for a 1.3x gain: RVRT stays in fp32 on CPUs
    cpu_bf16=False,
)
