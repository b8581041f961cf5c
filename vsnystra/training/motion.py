"""Training clips made from still photographs by a synthetic camera: sub-pixel pans, slow zooms, small rotations.

The project has only 12 real sequences, most with motion far larger than a zero-flow alignment can follow at
first. Stills moved by a known smooth camera give clips whose motion ranges from none (a static shot, where the
plain temporal mean already beats any single-frame denoiser) to a few pixels per frame, so the temporal path sees
cases it can learn from early, across 170 different scenes. Every frame, the first included, is resampled
(bicubic) at a random sub-pixel phase, so no frame is systematically sharper than its neighbours.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vsnystra.training.data import augment, read_image


@dataclass(frozen=True)
class CameraMotion:
    """Per-frame motion limits (uniformly drawn per clip); ``static`` is the share of clips without motion."""

    shift: float = 2.0  # pixels per frame, each axis
    zoom: float = 0.01  # relative scale change per frame
    rotate: float = 0.25  # degrees per frame
    static: float = 0.2


@dataclass(frozen=True)
class Trajectory:
    """One clip's camera: pan (px/frame), zoom (relative/frame), rotation (rad/frame), start phase (px)."""

    vx: float = 0.0
    vy: float = 0.0
    zoom: float = 0.0
    rotate: float = 0.0
    phase: tuple[float, float] = (0.0, 0.0)


def render(region: torch.Tensor, frames: int, size: int, path: Trajectory) -> torch.Tensor:
    """(T, C, size, size) views of ``region`` (1, C, L, L) around its centre along ``path``; bicubic, clamped."""
    side = region.shape[-1]
    half = (size - 1) / 2.0
    coords = torch.arange(size, dtype=torch.float32) - half
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    centre = (side - 1) / 2.0
    grids = []
    for t in range(frames):
        s, a = 1.0 + path.zoom * t, path.rotate * t
        cos, sin = math.cos(a) * s, math.sin(a) * s
        sx = centre + path.phase[0] + path.vx * t + cos * gx - sin * gy
        sy = centre + path.phase[1] + path.vy * t + sin * gx + cos * gy
        grids.append(torch.stack([sx, sy], dim=-1) * (2.0 / (side - 1)) - 1.0)
    grid = torch.stack(grids)  # (T, size, size, 2)
    out = F.grid_sample(
        region.expand(frames, -1, -1, -1), grid, mode="bicubic", padding_mode="border", align_corners=True
    )
    return out.clamp(0.0, 1.0)


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


class MotionClips:
    """Random clips of T frames from stills held in memory as uint8."""

    def __init__(self, files: Sequence[Path], frames: int, min_side: int, motion: CameraMotion | None = None) -> None:
        self.frames = frames
        self.motion = motion or CameraMotion()
        self.images = [img for img in (read_image(f) for f in files) if min(img.shape[-2:]) >= min_side]
        if not self.images:
            raise ValueError(f"vsnystra.training: no still image has both sides >= {min_side} px")

    def _margin(self, size: int) -> int:
        mo, t = self.motion, self.frames - 1
        reach = mo.shift * t + size * (mo.zoom * t + math.radians(mo.rotate * t)) + 4.0
        return math.ceil(reach)

    def sample(self, batch: int, size: int, gen: torch.Generator) -> torch.Tensor:
        """(batch, T, 3, size, size) float32 in [0, 1]."""
        return torch.stack([self._one(size, gen) for _ in range(batch)])

    def _one(self, size: int, gen: torch.Generator) -> torch.Tensor:
        mo = self.motion
        margin = self._margin(size)
        side = size + 2 * margin
        candidates = [im for im in self.images if min(im.shape[-2:]) >= side]
        pool = candidates or self.images
        img = pool[int(torch.randint(0, len(pool), (1,), generator=gen))]
        h, w = img.shape[-2:]
        side = min(side, h, w)
        y0 = int(torch.randint(0, h - side + 1, (1,), generator=gen))
        x0 = int(torch.randint(0, w - side + 1, (1,), generator=gen))
        region = img[:, y0 : y0 + side, x0 : x0 + side].float().unsqueeze(0) / 255.0
        moving = float(torch.rand((), generator=gen)) >= mo.static
        vx, vy, zoom, rot = (
            (
                _uniform(gen, -mo.shift, mo.shift),
                _uniform(gen, -mo.shift, mo.shift),
                _uniform(gen, -mo.zoom, mo.zoom),
                math.radians(_uniform(gen, -mo.rotate, mo.rotate)),
            )
            if moving
            else (0.0, 0.0, 0.0, 0.0)
        )
        phase = (_uniform(gen, -0.5, 0.5), _uniform(gen, -0.5, 0.5))
        clip = render(region, self.frames, size, Trajectory(vx, vy, zoom, rot, phase))
        clip = augment(clip, gen)
        if int(torch.randint(0, 2, (1,), generator=gen)):
            clip = clip.flip(0)
        return clip
