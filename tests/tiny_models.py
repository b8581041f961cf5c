"""Tiny random-weight SwinIR and Uformer (loaded through load_model, so they carry ModelInfo) for fast tests."""

from __future__ import annotations

import torch

from vsnystra.archs.base import RestorationModel
from vsnystra.archs.registry import load_model
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
