"""Image-quality metrics with the conventions of the SR/denoising literature (BasicSR / MATLAB style).

PSNR and SSIM on 8-bit values (inputs in [0, 1] are rounded to 1/255 first), optional border crop, optional
evaluation on the BT.601 luma (Y) channel; SSIM with an 11x11 Gaussian window (sigma 1.5), 'valid' borders,
averaged over channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vsnystra.training.degrade import rgb_to_y


def to_uint8_levels(img: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to 8-bit levels, returned as float64 on the 0-255 scale."""
    return torch.floor(img.detach().to(torch.float64).clamp(0.0, 1.0) * 255.0 + 0.5)


def _prepare(img: torch.Tensor, crop: int, y_channel: bool) -> torch.Tensor:
    x = to_uint8_levels(img)
    if y_channel:
        x = rgb_to_y(x / 255.0).unsqueeze(-3) * 255.0
    if crop > 0:
        x = x[..., crop:-crop, crop:-crop]
    return x


def psnr(img: torch.Tensor, ref: torch.Tensor, crop: int = 0, y_channel: bool = False) -> float:
    """PSNR in dB between two (C, H, W) images in [0, 1]."""
    a, b = _prepare(img, crop, y_channel), _prepare(ref, crop, y_channel)
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(img: torch.Tensor, ref: torch.Tensor, crop: int = 0, y_channel: bool = False) -> float:
    """SSIM (Wang et al. 2004) between two (C, H, W) images in [0, 1], mean over channels."""
    a, b = _prepare(img, crop, y_channel), _prepare(ref, crop, y_channel)
    c = a.shape[-3]
    w = _gaussian_window().to(a.dtype).expand(c, 1, 11, 11)
    a, b = a.reshape(1, c, *a.shape[-2:]), b.reshape(1, c, *b.shape[-2:])
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = F.conv2d(a, w, groups=c), F.conv2d(b, w, groups=c)
    s_aa = F.conv2d(a * a, w, groups=c) - mu_a**2
    s_bb = F.conv2d(b * b, w, groups=c) - mu_b**2
    s_ab = F.conv2d(a * b, w, groups=c) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * s_ab + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2)
    return float((num / den).mean())
