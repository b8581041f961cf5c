"""A sample clip made on the fly: a slow pan over a procedurally drawn picture, with Gaussian noise.

The demo (scripts/demo.sh) and the README's first command need a video without a download or a bundled file.
The picture has what restoration models care about: smooth gradients, hard edges at several angles, fine
periodic texture and small high-contrast detail. Everything is deterministic (seeded noise).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import vapoursynth as vs

SUPERSAMPLE = 3  # anti-aliasing of the drawn shapes


def picture(width: int = 512, height: int = 216) -> np.ndarray:
    """The clean picture, float32 (height, width, 3) in [0, 1]."""
    s = SUPERSAMPLE
    h, w = height * s, width * s
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / s  # pixel units of the output
    img = np.empty((h, w, 3), dtype=np.float32)
    t = yy / height
    img[..., 0] = 0.25 + 0.45 * t  # sky: blue to warm gradient
    img[..., 1] = 0.45 + 0.25 * t
    img[..., 2] = 0.85 - 0.35 * t
    # sun with a soft halo
    d = np.hypot(xx - 0.78 * width, yy - 0.25 * height)
    halo = np.clip(1.0 - d / (0.22 * height), 0.0, 1.0) ** 2
    img += halo[..., None] * np.array([0.35, 0.25, 0.0], dtype=np.float32)
    sun = d < 0.09 * height
    img[sun] = (1.0, 0.86, 0.35)
    # two ranges of hills
    far = yy > 0.55 * height + 0.08 * height * np.sin(xx / width * 7.0) + 0.03 * height * np.sin(xx / 9.0)
    img[far] = img[far] * 0.4 + np.array([0.30, 0.42, 0.38], dtype=np.float32) * 0.6
    near = yy > 0.7 * height + 0.06 * height * np.sin(xx / width * 13.0 + 1.0)
    grass = 0.35 + 0.12 * np.sin(xx * 1.7) * np.sin(yy * 2.3)  # fine texture
    img[near] = np.stack([0.2 * grass, grass, 0.15 * grass], axis=-1)[near]
    # a brick house: rotated roof edge, bricks, a window with bars
    hx0, hx1, hy0, hy1 = 0.18 * width, 0.42 * width, 0.5 * height, 0.85 * height
    wall = (xx > hx0) & (xx < hx1) & (yy > hy0) & (yy < hy1)
    row = np.floor((yy - hy0) / 6.0)
    mortar = ((yy - hy0) % 6.0 < 1.0) | (((xx - hx0) + 6.0 * (row % 2)) % 12.0 < 1.0)
    brick = np.where(mortar, 0.82, 0.0)[..., None] + np.where(mortar, 0.0, 1.0)[..., None] * np.array(
        [0.62, 0.27, 0.18], dtype=np.float32
    )
    img[wall] = brick[wall]
    cx = 0.5 * (hx0 + hx1)
    roof = (yy <= hy0) & (yy > hy0 - 0.25 * height + np.abs(xx - cx) * 0.9) & (np.abs(xx - cx) < 0.15 * width)
    img[roof] = (0.35, 0.12, 0.10)
    win = (np.abs(xx - cx) < 0.05 * width) & (np.abs(yy - 0.65 * height) < 0.06 * height)
    bars = win & ((np.abs(xx - cx) < 1.0) | (np.abs(yy - 0.65 * height) < 1.0))
    img[win] = (0.95, 0.9, 0.6)
    img[bars] = (0.1, 0.08, 0.05)
    # a striped flag (diagonal stripes: aliasing-prone detail)
    flag = (xx > 0.6 * width) & (xx < 0.7 * width) & (yy > 0.42 * height) & (yy < 0.52 * height)
    stripes = ((xx + yy) % 8.0) < 4.0
    img[flag & stripes] = (0.9, 0.1, 0.15)
    img[flag & ~stripes] = (0.95, 0.95, 0.95)
    pole = (np.abs(xx - 0.6 * width) < 1.0) & (yy > 0.42 * height) & (yy < 0.8 * height)
    img[pole] = (0.15, 0.15, 0.15)
    img = img.reshape(height, s, width, s, 3).mean(axis=(1, 3))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def sample_frames(
    frames: int = 48, width: int = 320, height: int = 180, sigma: float = 20.0, speed: float = 2.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) float32 arrays (frames, height, width, 3) in [0, 1]: a pan of ``speed`` px per frame.

    The noise is N(0, (sigma/255)^2), clipped to [0, 1] like noise in a real 8-bit video.
    """
    if frames < 1 or width < 16 or height < 16:
        raise ValueError(f"sample_frames: need frames >= 1 and sides >= 16, got {frames}, {width}x{height}")
    pan = int(np.ceil(speed * (frames - 1))) + 2
    canvas = picture(width + pan, int(height * 1.2))
    top = (canvas.shape[0] - height) // 2
    clean = np.empty((frames, height, width, 3), dtype=np.float32)
    for i in range(frames):
        x = speed * i
        x0, frac = int(np.floor(x)), np.float32(x - np.floor(x))
        a = canvas[top : top + height, x0 : x0 + width]
        b = canvas[top : top + height, x0 + 1 : x0 + 1 + width]
        clean[i] = (1 - frac) * a + frac * b  # sub-pixel pan
    rng = np.random.default_rng(seed)
    noisy = np.clip(clean + rng.standard_normal(clean.shape, dtype=np.float32) * (sigma / 255.0), 0.0, 1.0)
    return noisy.astype(np.float32), clean


def sample_clip(
    core: Any = None,
    frames: int = 48,
    width: int = 320,
    height: int = 180,
    sigma: float = 20.0,
    fps: int = 24,
    clean: bool = False,
) -> vs.VideoNode:
    """The sample as an RGBS VapourSynth clip (noisy by default; clean=True for the reference)."""
    import vapoursynth as vs

    core = core if core is not None else vs.core
    noisy_frames, clean_frames = sample_frames(frames, width, height, sigma)
    data = clean_frames if clean else noisy_frames
    blank = core.std.BlankClip(format=vs.RGBS, width=width, height=height, length=frames, fpsnum=fps, fpsden=1)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.asarray(out[p])[:] = data[n, :, :, p]
        return out

    return blank.std.ModifyFrame(clips=blank, selector=fill)
