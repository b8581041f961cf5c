"""SpyNet optical flow as RVRT embeds it, plus the flow warp both use.

The weights live inside every official RVRT checkpoint (``spynet.*``), so nothing is downloaded. State-dict keys
follow upstream: ``basic_module.{level}.basic_module.{0,2,4,6,8}`` convolutions and the ``mean``/``std`` buffers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def flow_warp(x: torch.Tensor, flow: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Sample ``x`` (n, c, h, w) at pixel positions + ``flow`` (n, h, w, 2 as (dx, dy)); bilinear, align_corners.

    Matches upstream's pixel-to-[-1, 1] normalisation ``2 p / max(size - 1, 1) - 1`` so warps agree bitwise-close.
    """
    if x.dtype in (torch.float16, torch.bfloat16):  # pixel positions need more than 8-11 mantissa bits
        return flow_warp(x.float(), flow.float(), padding_mode).to(x.dtype)
    _, _, h, w = x.shape
    dtype = flow.dtype
    gx = torch.arange(w, device=x.device, dtype=dtype).view(1, 1, w)
    gy = torch.arange(h, device=x.device, dtype=dtype).view(1, h, 1)
    vx = 2.0 * (gx + flow[..., 0]) / max(w - 1, 1) - 1.0
    vy = 2.0 * (gy + flow[..., 1]) / max(h - 1, 1) - 1.0
    grid = torch.stack((vx, vy), dim=3)
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode=padding_mode, align_corners=True)


class _Level(nn.Module):
    """One pyramid level: five 7x7 convolutions (8 -> 32 -> 64 -> 32 -> 16 -> 2), ReLU between."""

    def __init__(self) -> None:
        super().__init__()
        chans = [8, 32, 64, 32, 16, 2]
        layers: list[nn.Module] = []
        for i in range(5):
            layers.append(nn.Conv2d(chans[i], chans[i + 1], kernel_size=7, stride=1, padding=3))
            if i < 4:
                layers.append(nn.ReLU(inplace=False))
        self.basic_module = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.basic_module(x)


class SpyNet(nn.Module):
    """Coarse-to-fine flow ``ref -> supp`` at the input resolution (flow (n, 2, h, w), channels (dx, dy)).

    Inputs are resized to multiples of 32 first (so each side must exceed 32 px) and the flow is rescaled back.
    """

    def __init__(self) -> None:
        super().__init__()
        self.basic_module = nn.ModuleList([_Level() for _ in range(6)])
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def _pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        mean: torch.Tensor = self.mean  # type: ignore[assignment]
        std: torch.Tensor = self.std  # type: ignore[assignment]
        levels = [(x - mean) / std]
        for _ in range(5):
            levels.insert(0, F.avg_pool2d(levels[0], kernel_size=2, stride=2, count_include_pad=False))
        return levels

    def level_flows(self, ref: torch.Tensor, supp: torch.Tensor) -> list[torch.Tensor]:
        """The flow after each pyramid level, coarse to fine, for frames already sized to multiples of 32.

        Training supervises every level (vsnystra.training.flow); inference keeps only the last.
        """
        refs = self._pyramid(ref)
        supps = self._pyramid(supp)
        flow = refs[0].new_zeros(refs[0].shape[0], 2, refs[0].shape[2] // 2, refs[0].shape[3] // 2)
        flows: list[torch.Tensor] = []
        for level, module in enumerate(self.basic_module):
            up = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2.0
            if up.shape[2] != refs[level].shape[2]:
                up = F.pad(up, [0, 0, 0, 1], mode="replicate")
            if up.shape[3] != refs[level].shape[3]:
                up = F.pad(up, [0, 1, 0, 0], mode="replicate")
            warped = flow_warp(supps[level], up.permute(0, 2, 3, 1), padding_mode="border")
            flow = module(torch.cat([refs[level], warped, up], 1)) + up
            flows.append(flow)
        return flows

    def forward(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        h, w = ref.shape[-2:]
        if min(h, w) <= 32:
            raise ValueError(
                f"SpyNet: flow frames must be larger than 32 px on each side, got {h}x{w}; "
                "use larger frames or tiles (RVRT deblur/denoise compute flows at 1/4 size: frames >= 132 px)"
            )
        h_floor = math.ceil(h / 32.0) * 32
        w_floor = math.ceil(w / 32.0) * 32
        ref = F.interpolate(ref, size=(h_floor, w_floor), mode="bilinear", align_corners=False)
        supp = F.interpolate(supp, size=(h_floor, w_floor), mode="bilinear", align_corners=False)
        flow = self.level_flows(ref, supp)[-1]
        out = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
        scale = torch.tensor([w / w_floor, h / h_floor], dtype=out.dtype, device=out.device).view(1, 2, 1, 1)
        return out * scale
