"""Noise level of a clip for non-blind denoisers when the user gives no sigma.

The estimator (published parts, combined):
* Immerkær's noise-variance operator (J. Immerkær, "Fast noise variance estimation", CVIU 64(2), 1996): the 3x3
  mask [[1,-2,1],[-2,4,-2],[1,-2,1]] cancels smooth image content; on white Gaussian noise of level sigma its
  output has standard deviation 6·sigma (the mask's squared weights sum to 36).
* Edge exclusion as in Tai and Yang ("A fast method for image noise estimation using Laplacian operator and
  adaptive edge detection", ISCCSP 2008): pixels among the 10 % largest Sobel gradient magnitudes are ignored.
* A robust scale instead of Immerkær's mean: Donoho's median absolute deviation (D. L. Donoho, I. M. Johnstone,
  "Ideal spatial adaptation by wavelet shrinkage", Biometrika 1994: sigma = median(|r|) / 0.6745), which texture
  that survives the mask shifts far less than the mean.
* Clipping at black and white shrinks the noise there: after a first estimate s, pixels whose 3x3 mean lies within
  2.5·s of 0 or 1 are dropped and the estimate is repeated (twice).
Every plane of every given frame is measured and the median over planes and frames is returned, on the 0-255 scale.
No constant was fitted to any data set; benchmarks/sigma_estimate.py reports the error on DAVIS and Vid4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EDGE_QUANTILE = 0.9  # Tai and Yang's share of pixels kept (the flattest 90 %)
MAD_TO_SIGMA = 0.6745  # median |N(0, 1)|
MASK_NORM = 6.0  # sqrt(sum of the squared mask weights)
SATURATION_MARGIN = 2.5  # noise estimates within this many sigma of black or white are dropped
MIN_PIXELS = 1000
_QUANTILE_STRIDE = 7  # the gradient threshold is read from every 7th pixel (torch.quantile's size limit)


def _kernels(device: torch.device) -> torch.Tensor:
    laplace = torch.tensor([[1.0, -2, 1], [-2, 4, -2], [1, -2, 1]])
    sobel_x = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    mean = torch.full((3, 3), 1 / 9)
    return torch.stack([laplace, sobel_x, sobel_x.T, mean]).unsqueeze(1).to(device)


def _plane_sigma(residual: torch.Tensor, flat: torch.Tensor, local_mean: torch.Tensor) -> float:
    """Robust sigma (0-1 scale) of one plane's residual over the flat pixels, with the clipping exclusion."""
    sigma = float(residual[flat].median()) / MAD_TO_SIGMA / MASK_NORM
    for _ in range(2):
        margin = SATURATION_MARGIN * sigma
        keep = flat & (local_mean > margin) & (local_mean < 1 - margin)
        if int(keep.sum()) < MIN_PIXELS:
            break
        sigma = float(residual[keep].median()) / MAD_TO_SIGMA / MASK_NORM
    return sigma


def estimate_sigma(frames: torch.Tensor) -> float:
    """Noise level (0-255 scale) of (T, C, H, W) or (C, H, W) frames in [0, 1] (white Gaussian noise model)."""
    if frames.dim() == 3:
        frames = frames.unsqueeze(0)
    if frames.dim() != 4 or min(frames.shape[-2:]) < 3:
        raise ValueError(f"estimate_sigma: frames must be (T, C, H, W) of at least 3x3, got {tuple(frames.shape)}")
    t, c, h, w = frames.shape
    planes = frames.detach().to(torch.float32).reshape(t * c, 1, h, w)
    out = F.conv2d(planes, _kernels(planes.device)).flatten(2)  # (planes, 4, pixels)
    residual = out[:, 0].abs()
    gradient = out[:, 1].abs() + out[:, 2].abs()
    local_mean = out[:, 3]
    threshold = torch.quantile(gradient[:, ::_QUANTILE_STRIDE], EDGE_QUANTILE, dim=1, keepdim=True)
    flat = gradient <= threshold
    sigmas = [_plane_sigma(residual[i], flat[i], local_mean[i]) for i in range(t * c)]
    return float(torch.tensor(sigmas).median()) * 255.0
