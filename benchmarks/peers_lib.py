"""Building blocks of benchmarks/peers.py: evaluation data, seeded noise, metrics, the classical peers, grid statistics.

Kept apart from peers.py (the command line, the models, the cache and the report) so that tests/test_peers.py can
check the pieces that can be wrong without torch models, bm3d or OpenCV: the noise, the 4x4 phase statistics and
the ffmpeg pipe. bm3d and cv2 are benchmark-only dependencies (the ``bench`` extra), imported inside the functions
that use them.
"""

from __future__ import annotations

import math
import os
import subprocess
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from vsnystra.training.metrics import ssim

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


# ---------------------------------------------------------------- data


def read_rgb(path: Path) -> np.ndarray:
    """(3, H, W) float32 in [0, 1]."""
    with Image.open(path) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0)


def centre_crop(a: np.ndarray, size: int, align: int = 1) -> np.ndarray:
    """Centre ``size`` x ``size`` crop of (..., H, W) (0 or larger than the image: unchanged), corner on ``align``."""
    h, w = a.shape[-2:]
    ch, cw = min(size, h) if size else h, min(size, w) if size else w
    top, left = (h - ch) // 2 // align * align, (w - cw) // 2 // align * align
    return a[..., top : top + ch, left : left + cw]


def vid4_paths(data: Path, seq: str, frames: int) -> list[Path]:
    paths = sorted((data / "video" / "Vid4" / seq).glob("*.png"))[: frames or None]
    if not paths:
        raise FileNotFoundError(f"peers: no frames in {data / 'video' / 'Vid4' / seq}; pass --data or --sequences")
    return paths


def image_paths(data: Path, dataset: str, limit: int) -> list[Path]:
    paths = sorted((data / "images" / dataset).glob("*.png"))[: limit or None]
    if not paths:
        raise FileNotFoundError(f"peers: no images in {data / 'images' / dataset}; pass --data or --datasets")
    return paths


# ---------------------------------------------------------------- noise


def noise_seed(dataset: str, item: str, sigma: float) -> int:
    """The one seed of (dataset, item, sigma): CRC-32 of ``"{dataset}/{item}/{sigma:g}"``."""
    return zlib.crc32(f"{dataset}/{item}/{sigma:g}".encode())


def add_noise(clean: list[np.ndarray], sigma: float, seed: int) -> list[np.ndarray]:
    """clean[k] + N(0, (sigma/255)^2), not clipped; one default_rng(seed) stream, drawn frame after frame.

    Each frame's noise is drawn in (3, H, W) order at its full size before any crop, so the first k frames and any
    crop see the same noise whatever --frames and --crop are.
    """
    rng = np.random.default_rng(seed)
    return [(c + rng.standard_normal(c.shape) * (sigma / 255.0)).astype(np.float32) for c in clean]


# ---------------------------------------------------------------- metrics


def psnr_rgb(out: np.ndarray, ref: np.ndarray) -> float:
    """PSNR in dB on [0, 1] RGB floats, ``out`` clipped to [0, 1] (no rounding)."""
    mse = float(np.mean((np.clip(out.astype(np.float64), 0.0, 1.0) - ref.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def ssim_rgb(out: np.ndarray, ref: np.ndarray) -> float:
    """The project's SSIM (vsnystra.training.metrics: clipped, 8-bit levels, 11x11 Gaussian, mean over R, G, B)."""
    return ssim(torch.from_numpy(np.ascontiguousarray(out)), torch.from_numpy(np.ascontiguousarray(ref)))


def scores(outs: np.ndarray | list[np.ndarray], refs: np.ndarray | list[np.ndarray]) -> tuple[float, float]:
    """Mean PSNR and mean SSIM over frames or images."""
    pairs = list(zip(outs, refs, strict=True))
    return (
        float(np.mean([psnr_rgb(o, r) for o, r in pairs])),
        float(np.mean([ssim_rgb(o, r) for o, r in pairs])),
    )


@dataclass
class Timed:
    value: Any
    cpu: float  # CPU seconds of this process and its finished children (ffmpeg)
    wall: float


def timed(fn: Callable[[], Any]) -> Timed:
    t0, w0 = os.times(), time.perf_counter()
    value = fn()
    t1, w1 = os.times(), time.perf_counter()
    cpu = sum(b - a for a, b in zip(t0[:4], t1[:4], strict=True))
    return Timed(value, cpu, w1 - w0)


# ---------------------------------------------------------------- grid statistics


def phase_means(err: np.ndarray, cell: int = 4) -> np.ndarray:
    """(cell, cell) means of ``err`` (..., H, W) over all pixels of each phase (y mod cell, x mod cell)."""
    h, w = err.shape[-2:]
    e = err[..., : h - h % cell, : w - w % cell].astype(np.float64)
    e = e.reshape(-1, (h - h % cell) // cell, cell, (w - w % cell) // cell, cell)
    return e.mean(axis=(0, 1, 3))


def phase_spread(err: np.ndarray, cell: int = 4) -> float:
    """max - min of the phase means, in levels of 255 (``err`` on the [0, 1] scale)."""
    m = phase_means(err, cell)
    return float(m.max() - m.min()) * 255.0


def quarter_frequency_ratio(err: np.ndarray) -> float:
    """Largest 2-D power at 1/4 cycle per pixel (either axis; the other at 0, 1/4 or 1/2) over the median power.

    Power = |FFT2|^2 of each (H, W) plane of ``err`` (..., H, W), averaged over the planes; H and W are cut to
    multiples of 4.
    """
    h, w = err.shape[-2:]
    h, w = h - h % 4, w - w % 4
    planes = err[..., :h, :w].reshape(-1, h, w).astype(np.float64)
    power = (np.abs(np.fft.fft2(planes)) ** 2).mean(axis=0)
    ys, xs = [0, h // 4, h // 2, 3 * h // 4], [0, w // 4, w // 2, 3 * w // 4]
    quarter = [power[y, x] for y in ys for x in xs if y in (h // 4, 3 * h // 4) or x in (w // 4, 3 * w // 4)]
    return float(max(quarter) / np.median(power))


# ---------------------------------------------------------------- ffmpeg through raw pipes


def _planes(frames: np.ndarray, depth: int) -> tuple[bytes, str]:
    if depth == 32:  # gbrpf32le: planes G, B, R; any float value, exact
        return np.ascontiguousarray(frames[:, [1, 2, 0]], dtype="<f4").tobytes(), "gbrpf32le"
    if depth in (8, 16):  # R, G, B planes carried as Y, U, V: a relabelling, no colour conversion
        top = (1 << depth) - 1
        levels = np.floor(np.clip(frames, 0.0, 1.0) * top + 0.5)
        return levels.astype("<u2" if depth == 16 else np.uint8).tobytes(), "yuv444p16le" if depth == 16 else "yuv444p"
    raise ValueError(f"ffmpeg_filter: depth must be 8, 16 or 32, got {depth}")


def ffmpeg_filter(frames: np.ndarray, vf: str, depth: int = 32) -> np.ndarray:
    """Run the ffmpeg filter chain ``vf`` over (T, 3, H, W) RGB floats through raw pipes; returns (T, 3, H, W) float32.

    depth 32 pipes gbrpf32le both ways (bit-exact, unclipped). depth 16 / 8 clip and round here (numpy, no dither)
    and pipe R, G, B as the planes of yuv444p16le / yuv444p: the formats hqdn3d and nlmeans (8-bit only) take
    natively, so ffmpeg converts nothing; a filter chain that makes ffmpeg insert a scaler raises. One thread.
    """
    t, c, h, w = frames.shape
    if c != 3:
        raise ValueError(f"ffmpeg_filter: frames must be (T, 3, H, W), got {frames.shape}")
    data, fmt = _planes(frames, depth)
    raw = ["-f", "rawvideo", "-pix_fmt", fmt, "-s", f"{w}x{h}", "-framerate", "25"]
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-v", "verbose", "-threads", "1", "-filter_threads", "1"]
    cmd += [*raw, "-i", "pipe:0", "-vf", vf, "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", fmt, "pipe:1"]
    proc = subprocess.run(cmd, input=data, capture_output=True, check=False)
    log = proc.stderr.decode(errors="replace")
    if proc.returncode:
        raise RuntimeError(f"ffmpeg_filter: ffmpeg failed on {vf!r}: {log[-800:]}")
    if "auto_scale" in log:
        raise RuntimeError(f"ffmpeg_filter: ffmpeg converted the pixel format for {vf!r}; use a depth it takes")
    dtype = {32: "<f4", 16: "<u2", 8: np.uint8}[depth]
    out = np.frombuffer(proc.stdout, dtype=dtype)
    if out.size != t * c * h * w:
        raise RuntimeError(f"ffmpeg_filter: {vf!r} returned {out.size} samples, expected {t * c * h * w}")
    out = out.reshape(t, c, h, w)
    if depth == 32:
        return np.ascontiguousarray(out[:, [2, 0, 1]])
    return (out.astype(np.float32) / ((1 << depth) - 1)).astype(np.float32)


# ---------------------------------------------------------------- the classical peers and their fixed strengths

NLMEANS_PATCH, NLMEANS_RESEARCH = 7, 15  # ffmpeg's defaults
# Strength per unit of sigma (levels of 255), chosen by benchmarks/peers_calibrate.py on DAVIS training clips (never
# on the evaluation sets); results/peers_calibration.md holds its table.
NLMEANS_K = 0.75  # ffmpeg nlmeans s = K sigma (weight exp(-patch SSD / (10 s)^2)), clamped to the filter's [1, 30]
HQDN3D_K = 1.5  # hqdn3d spatial = K sigma (difference at which its blend weight falls to 1/4), temporal 1.5x that
OPENCV_K = 0.5  # OpenCV NLM h = hColor = K sigma


def nlmeans_vf(sigma: float, k: float = NLMEANS_K) -> str:
    """ffmpeg nlmeans on every plane with patch 7, research window 15 and s = k sigma in [1, 30]."""
    s = min(30.0, max(1.0, k * sigma))
    p, r = NLMEANS_PATCH, NLMEANS_RESEARCH
    return f"nlmeans=s={s:.4g}:p={p}:pc={p}:r={r}:rc={r}"


def hqdn3d_vf(sigma: float, k: float = HQDN3D_K) -> str:
    """hqdn3d with spatial = k sigma and temporal = 1.5 k sigma (the filter's default ratio 6:4) on every plane."""
    sp, tm = k * sigma, 1.5 * k * sigma
    return f"hqdn3d={sp:.4g}:{sp:.4g}:{tm:.4g}:{tm:.4g}"


def cbm3d(frames: np.ndarray, sigma: float) -> np.ndarray:
    """CBM3D (bm3d.bm3d_rgb, default 'np' profile, opponent colour space) on each unclipped frame."""
    import bm3d

    out = [bm3d.bm3d_rgb(f.transpose(1, 2, 0).astype(np.float64), sigma_psd=sigma / 255.0) for f in frames]
    return np.stack([o.transpose(2, 0, 1) for o in out]).astype(np.float32)


def _bgr8(frame: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(
        np.floor(np.clip(frame[::-1], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    )


def _rgbf(bgr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(bgr.transpose(2, 0, 1)[::-1]).astype(np.float32) / 255.0


def opencv_nlm(frames: np.ndarray, sigma: float, k: float = OPENCV_K) -> np.ndarray:
    """cv2.fastNlMeansDenoisingColored, h = hColor = k sigma, on each frame (8-bit: clipped, rounded), template 7,
    search 21."""
    import cv2

    cv2.setNumThreads(1)
    h = k * sigma
    return np.stack([_rgbf(cv2.fastNlMeansDenoisingColored(_bgr8(f), None, h, h, 7, 21)) for f in frames])


def mirrored_window(index: int, length: int, window: int) -> list[int]:
    """Frame indices index - window//2 .. index + window//2, mirrored at the clip's ends (0 1 2 -> 2 1 0 1 2)."""
    out = []
    for k in range(index - window // 2, index + window // 2 + 1):
        k = abs(k)
        out.append(2 * (length - 1) - k if k >= length else k)
    if min(out) < 0:
        raise ValueError(f"opencv_nlm_multi: clip of {length} frames is too short for a temporal window of {window}")
    return out


def opencv_nlm_multi(frames: np.ndarray, sigma: float, k: float = OPENCV_K, window: int = 5) -> np.ndarray:
    """cv2.fastNlMeansDenoisingColoredMulti, h = hColor = k sigma, temporal window 5 (ends mirrored), template 7,
    search 21."""
    import cv2

    cv2.setNumThreads(1)
    h = k * sigma
    bgr = [_bgr8(f) for f in frames]
    outs = []
    for i in range(len(bgr)):
        srcs = [bgr[k] for k in mirrored_window(i, len(bgr), window)]
        outs.append(_rgbf(cv2.fastNlMeansDenoisingColoredMulti(srcs, window // 2, window, None, h, h, 7, 21)))
    return np.stack(outs)


def classical_peers(video: bool, sigma: float) -> list[tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    """(label, fn(noisy frames) -> restored frames) of every classical peer at sigma; labels state the formulas."""
    cv = f"h = hColor = {OPENCV_K:g}σ, template 7, search 21"
    peers: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = [
        ("CBM3D frame by frame (bm3d_rgb, sigma_psd = σ/255)", lambda x: cbm3d(x, sigma)),
    ]
    nl, hq = nlmeans_vf(sigma), hqdn3d_vf(sigma)
    nl_label = f"ffmpeg nlmeans (s = {NLMEANS_K:g}σ ≤ 30, p 7, r 15, 8-bit RGB)"
    if not video:  # one image per call: hqdn3d has no previous frame, so only its spatial part acts
        return [
            *peers,
            (f"OpenCV fastNlMeansDenoisingColored ({cv})", lambda x: opencv_nlm(x, sigma)),
            (nl_label, lambda x: ffmpeg_filter(x, nl, depth=8)),
            (f"ffmpeg hqdn3d ({HQDN3D_K:g}σ spatial; one frame, 16-bit RGB)", lambda x: ffmpeg_filter(x, hq, depth=16)),
        ]
    return [
        *peers,
        (f"OpenCV fastNlMeansDenoisingColoredMulti (window 5, {cv})", lambda x: opencv_nlm_multi(x, sigma)),
        (nl_label, lambda x: ffmpeg_filter(x, nl, depth=8)),
        (
            f"ffmpeg hqdn3d ({HQDN3D_K:g}σ spatial, {1.5 * HQDN3D_K:g}σ temporal, 16-bit RGB)",
            lambda x: ffmpeg_filter(x, hq, depth=16),
        ),
    ]
