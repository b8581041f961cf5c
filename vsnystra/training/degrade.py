"""Degradations for training and evaluation: MATLAB-compatible bicubic resize and Gaussian noise.

SR benchmarks (Set5, Set14, ...) ship low-resolution images made by MATLAB's ``imresize(x, 1/s, 'bicubic')``,
which antialiases when downscaling (the cubic kernel is stretched by 1/scale). A model trained on another
downscaler (e.g. torch's non-antialiased bicubic) loses decibels on them, so the recipe and the quality benchmark
use this re-implementation. It builds one dense (out, in) weight matrix per axis, with MATLAB's symmetric edge
handling folded into the matrix, and applies it as two matrix products.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5, as MATLAB's ``imresize`` uses."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def resize_weights(in_len: int, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    """The (out_len, in_len) float64 matrix MATLAB's imresize applies along one axis.

    Output pixel i (1-based) samples input coordinate u = i/scale + (1 - 1/scale)/2; when downscaling with
    antialiasing the kernel is widened by 1/scale. Taps outside the image are mirrored (MATLAB's 'symmetric').
    """
    if in_len < 1 or out_len < 1 or scale <= 0:
        raise ValueError(f"resize_weights: bad sizes in={in_len} out={out_len} scale={scale}")
    width = 4.0
    kscale = scale if (antialias and scale < 1) else 1.0
    width = width / kscale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - width / 2.0)
    taps = math.ceil(width) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based input indices
    w = kscale * cubic(kscale * (u[:, None] - idx))
    w = w / w.sum(axis=1, keepdims=True)
    # symmetric padding: ... 2 1 | 1 2 ... n | n n-1 ...
    period = 2 * in_len
    j = np.mod(idx.astype(np.int64) - 1, period)
    j = np.where(j < in_len, j, period - 1 - j)
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.repeat(np.arange(out_len), taps)
    np.add.at(mat, (rows, j.reshape(-1)), w.reshape(-1))
    return mat


def imresize(img: torch.Tensor, scale: float, antialias: bool = True, uint8: bool = False) -> torch.Tensor:
    """MATLAB ``imresize(img, scale, 'bicubic')`` for a float tensor (..., H, W); output (..., ceil(sH), ceil(sW)).

    ``img`` holds values in [0, 1]. With ``uint8=True`` the result is what MATLAB returns for a uint8 image: it
    resizes rows first, then columns, and rounds to 8-bit after EACH pass (this reproduces the benchmark LR files
    bit-exactly). Otherwise nothing is clamped or rounded.
    """
    if img.ndim < 2:
        raise ValueError(f"imresize: expected (..., H, W), got shape {tuple(img.shape)}")
    h, w = img.shape[-2:]
    oh, ow = math.ceil(h * scale), math.ceil(w * scale)
    wh = torch.from_numpy(resize_weights(h, oh, scale, antialias)).to(torch.float64)
    ww = torch.from_numpy(resize_weights(w, ow, scale, antialias)).to(torch.float64)
    x = img.to(torch.float64)
    if uint8:  # work on the integer levels, as MATLAB does, so that ties round the same way
        x = torch.floor(x.clamp(0.0, 1.0) * 255.0 + 0.5)
    out = torch.matmul(wh, x)  # (..., oh, W)
    if uint8:
        out = torch.floor(out.clamp(0.0, 255.0) + 0.5)
    out = torch.matmul(out, ww.transpose(0, 1))  # (..., oh, ow)
    if uint8:
        out = torch.floor(out.clamp(0.0, 255.0) + 0.5) / 255.0
    return out.to(img.dtype if img.is_floating_point() else torch.float32)


def quantize(img: torch.Tensor) -> torch.Tensor:
    """Round a [0, 1] image to 8-bit levels, as saving an LR PNG does (MATLAB rounds half away from zero)."""
    x = img.clamp(0.0, 1.0) * 255.0
    return torch.floor(x + 0.5) / 255.0


def add_gaussian_noise(
    img: torch.Tensor, sigma: float | torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """img + N(0, (sigma/255)^2), not clipped (the official test scripts do not clip the noisy input).

    ``sigma`` is on the 0-255 scale; a tensor broadcasts against ``img`` (e.g. one sigma per batch sample).
    """
    noise = torch.randn(img.shape, generator=generator, dtype=img.dtype, device=img.device)
    sig = sigma if isinstance(sigma, torch.Tensor) else torch.tensor(float(sigma), dtype=img.dtype)
    return img + noise * (sig.to(img.dtype) / 255.0)


def rgb_to_y(img: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma on the [16, 235]/255 scale, as MATLAB's rgb2ycbcr (used for SR Y-PSNR); (..., 3, H, W)."""
    r, g, b = img[..., 0, :, :], img[..., 1, :, :], img[..., 2, :, :]
    return (65.481 * r + 128.553 * g + 24.966 * b + 16.0) / 255.0
