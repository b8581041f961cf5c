"""Tiny random-weight SwinIR, Uformer and RVRT (loaded through load_model, so they carry ModelInfo) for fast tests."""

from __future__ import annotations

import torch

from vsnystra.archs.base import RestorationModel
from vsnystra.archs.registry import load_model
from vsnystra.archs.rvrt import RVRT
from vsnystra.archs.swinir import SwinIR
from vsnystra.archs.uformer import Uformer


def tiny_swinir() -> RestorationModel:
    torch.manual_seed(1)
    net = SwinIR(
        img_size=16, embed_dim=12, depths=(2,), num_heads=(2,), window_size=4, upscale=2, upsampler="pixelshuffledirect"
    )
    for p in net.parameters():
        p.data.normal_(0, 0.05)  # non-zero bias tables, so a wrong gather would show
    return load_model(net.state_dict())


def tiny_uformer() -> RestorationModel:
    torch.manual_seed(2)
    net = Uformer(img_size=32, embed_dim=4, depths=(1,) * 9, num_heads=(1,) * 9, win_size=8)
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    return load_model(net.state_dict())


def tiny_rvrt_denoiser() -> RestorationModel:
    """A non-blind RVRT denoiser (sigma map as 4th input channel); frames are padded to its 129 px flow minimum."""
    torch.manual_seed(3)
    net = RVRT(
        upscale=1,
        embed_dims=(12, 12, 12),
        num_heads=(2, 2, 2),
        num_blocks=(1, 1, 1),
        nonblind_denoising=True,
        deformable_groups=4,
        attention_heads=4,
    )
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    return load_model(net.state_dict())
