"""Flow training pairs with exact ground truth: still photographs moved as layers by known affine cameras.

RVRT's SpyNet cannot be downloaded here and the project has no optical-flow dataset. Layered scenes in the manner
of FlyingChairs give one: a background still under a smooth camera (pan, zoom, rotation) and up to a few
elliptical objects cut from other stills, each with its own motion, so the ground truth holds motion boundaries
and occlusions as well as smooth fields. Every layer maps a frame pixel ``p`` (centred coordinates) to its texture
at ``c + M p``; the flow from the reference frame ``a`` to the supporting frame ``b`` at ``p`` is therefore
``M_b^-1 (c_a + M_a p - c_b) - p`` for the topmost layer that covers ``p`` in ``a``.

Pairs come exactly as RVRT's denoisers feed SpyNet: frames rendered at 4x size, Gaussian noise added, then
``F.interpolate(scale_factor=0.25, mode="bicubic")``; the flow is given at the positions that interpolation
samples (``4 i + 1.5``), in low-resolution pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from vsnystra.training.data import read_image


@dataclass(frozen=True)
class FlowScene:
    """Motion limits per pair, in low-resolution pixels (the scale SpyNet sees inside RVRT's denoisers)."""

    shift: float = 6.0  # background pan, each axis
    zoom: float = 0.04  # relative scale change
    rotate: float = 3.0  # degrees
    objects: int = 3  # at most this many moving objects
    object_shift: float = 8.0
    static: float = 0.1  # share of pairs with a still background
    sigma_max: float = 50.0 / 255.0


@dataclass(frozen=True)
class _Layer:
    texture: torch.Tensor  # (1, 3, L, L) float in [0, 1]
    ca: torch.Tensor  # (2,) texture offset in frame a (centred texture coordinates)
    ma: torch.Tensor  # (2, 2)
    cb: torch.Tensor
    mb: torch.Tensor
    radii: tuple[float, float] | None  # ellipse radii in texture pixels; None = the background


def _rotation(angle: float, scale: float) -> torch.Tensor:
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


def _grid(size: int, scale: int) -> torch.Tensor:
    """(size*size, 2) centred full-resolution positions of a frame ``size`` px wide rendered at ``scale``."""
    full = size * scale
    coords = torch.arange(size, dtype=torch.float64) * scale + (scale - 1) / 2.0 - (full - 1) / 2.0
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([gx, gy], dim=-1).reshape(-1, 2)


class FlowPairs:
    """Random (ref, supp, flow) triples from still photographs held in memory as uint8."""

    def __init__(self, files: Sequence[Path], size: int = 64, scale: int = 4, scene: FlowScene | None = None) -> None:
        self.size, self.scale = size, scale
        self.scene = scene or FlowScene()
        self.images = [img for img in (read_image(f) for f in files) if min(img.shape[-2:]) >= 96]
        if len(self.images) < 2:
            raise ValueError("vsnystra.training.flow: need at least two still images with both sides >= 96 px")
        self._full = _grid(size * scale, 1)  # every full-resolution pixel, for rendering
        self._low = _grid(size, scale)  # the positions the bicubic 1/4 resize samples

    def _u(self, gen: torch.Generator, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=gen))

    def _texture(self, gen: torch.Generator, side: int) -> torch.Tensor:
        img = self.images[int(torch.randint(0, len(self.images), (1,), generator=gen))]
        h, w = img.shape[-2:]
        side = min(side, h, w)
        y0 = int(torch.randint(0, h - side + 1, (1,), generator=gen))
        x0 = int(torch.randint(0, w - side + 1, (1,), generator=gen))
        tex = img[:, y0 : y0 + side, x0 : x0 + side].float().unsqueeze(0) / 255.0
        if int(torch.randint(0, 2, (1,), generator=gen)):
            tex = tex.flip(-1)
        return tex

    def _motion(self, gen: torch.Generator, shift: float, still: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(offset, matrix) of frame b relative to frame a, in full-resolution pixels."""
        if still:
            return torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
        sc = self.scene
        # small motions dominate real video: the magnitude is drawn on a squared scale
        mag = shift * self.scale * self._u(gen, 0.0, 1.0) ** 2
        ang = self._u(gen, 0.0, 2 * math.pi)
        d = torch.tensor([mag * math.cos(ang), mag * math.sin(ang)], dtype=torch.float64)
        rot = math.radians(self._u(gen, -sc.rotate, sc.rotate))
        zoom = 1.0 + self._u(gen, -sc.zoom, sc.zoom)
        return d, _rotation(rot, zoom)

    def _background(self, gen: torch.Generator) -> _Layer:
        sc, full = self.scene, self.size * self.scale
        side = math.ceil(full * (1.0 + sc.zoom) * 1.5 + 2 * sc.shift * self.scale) + 8
        tex = self._texture(gen, side)
        ma = _rotation(math.radians(self._u(gen, -10, 10)), self._u(gen, 0.8, 1.0))
        ca = torch.tensor([self._u(gen, -0.5, 0.5), self._u(gen, -0.5, 0.5)], dtype=torch.float64)
        still = float(torch.rand((), generator=gen)) < sc.static
        d, m = self._motion(gen, sc.shift, still)
        return _Layer(tex, ca, ma, ca + d, ma @ m, None)

    def _object(self, gen: torch.Generator) -> _Layer:
        sc, full = self.scene, self.size * self.scale
        tex = self._texture(gen, full)
        half = (tex.shape[-1] - 1) / 2.0
        radii = (self._u(gen, 0.15, 0.45) * half * 2, self._u(gen, 0.15, 0.45) * half * 2)
        radii = (min(radii[0], half - 2), min(radii[1], half - 2))
        ma = _rotation(self._u(gen, 0, 2 * math.pi), self._u(gen, 0.7, 1.4))
        centre = torch.tensor([self._u(gen, -0.5, 0.5), self._u(gen, -0.5, 0.5)], dtype=torch.float64) * full
        ca = -(ma @ centre)  # the texture's centre appears at ``centre`` in frame a
        d, m = self._motion(gen, sc.object_shift, still=False)
        return _Layer(tex, ca, ma, ca + d, ma @ m, radii)

    def _render(self, layer: _Layer, c: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(rgb (1, 3, S, S), coverage (1, 1, S, S)) of one layer in one frame."""
        full = self.size * self.scale
        src = self._full @ m.T + c  # centred texture coordinates
        side = layer.texture.shape[-1]
        grid = (src * (2.0 / (side - 1))).float().view(1, full, full, 2)
        rgb = F.grid_sample(layer.texture, grid, mode="bicubic", padding_mode="reflection", align_corners=True)
        if layer.radii is None:
            return rgb.clamp(0, 1), torch.ones(1, 1, full, full)
        rx, ry = layer.radii
        r = torch.sqrt((src[:, 0] / rx) ** 2 + (src[:, 1] / ry) ** 2)
        cover = ((1.0 - r) * min(rx, ry) + 0.5).clamp(0, 1).float().view(1, 1, full, full)
        return rgb.clamp(0, 1), cover

    def _flow(self, layer: _Layer) -> tuple[torch.Tensor, torch.Tensor]:
        """(flow (2, n, n) in low-resolution pixels, inside (n, n) bool) at the low-resolution sample positions."""
        p = self._low
        src = p @ layer.ma.T + layer.ca
        q = (src - layer.cb) @ torch.linalg.inv(layer.mb).T
        flow = ((q - p) / self.scale).T.reshape(2, self.size, self.size)
        if layer.radii is None:
            return flow.float(), torch.ones(self.size, self.size, dtype=torch.bool)
        rx, ry = layer.radii
        inside = ((src[:, 0] / rx) ** 2 + (src[:, 1] / ry) ** 2 <= 1.0).view(self.size, self.size)
        return flow.float(), inside

    def one(self, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Noisy ref and supp (3, n, n) at low resolution, both clean (2, 3, n, n), and the flow (2, n, n)."""
        layers = [self._background(gen)]
        count = int(torch.randint(0, self.scene.objects + 1, (1,), generator=gen))
        layers += [self._object(gen) for _ in range(count)]
        frames = []
        for which in ("a", "b"):
            out = torch.zeros(1, 3, self.size * self.scale, self.size * self.scale)
            for layer in layers:
                c, m = (layer.ca, layer.ma) if which == "a" else (layer.cb, layer.mb)
                rgb, cover = self._render(layer, c, m)
                out = out * (1 - cover) + rgb * cover
            frames.append(out)
        flow = torch.zeros(2, self.size, self.size)
        for layer in layers:
            f, inside = self._flow(layer)
            flow = torch.where(inside, f, flow)
        clean = torch.cat(frames)
        sigma = self._u(gen, 0.0, self.scene.sigma_max)
        noisy = clean + sigma * torch.randn(clean.shape, generator=gen)
        low = F.interpolate(noisy, scale_factor=1.0 / self.scale, mode="bicubic")
        low_clean = F.interpolate(clean, scale_factor=1.0 / self.scale, mode="bicubic")
        return low[0], low[1], low_clean, flow

    def sample(self, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ref, supp, flow): (batch, 3, n, n), (batch, 3, n, n), (batch, 2, n, n)."""
        items = [self.one(gen) for _ in range(batch)]
        return (
            torch.stack([i[0] for i in items]),
            torch.stack([i[1] for i in items]),
            torch.stack([i[3] for i in items]),
        )
