"""The noise estimator, and RVRT's denoiser without sigma: estimated per scene, logged, written to nystra_sigma."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import vapoursynth as vs

from vsnystra.runtime.noise import estimate_sigma
from vsnystra.vs.filters import rvrt_with_restorer
from vsnystra.vs.frames import tensor_to_frame

core = vs.core


def texture(h: int, w: int, t: int = 1, seed: int = 0) -> torch.Tensor:
    """Smooth gradients, sharp edges and fine stripes over the whole [0, 1] range (clipping included)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for k in range(t):
        planes = []
        for c in range(3):
            smooth = 0.5 + 0.5 * np.sin(xx / (9 + c) + yy / 13 + k + rng.uniform(0, 6))
            edges = 0.3 * ((xx // 17 + yy // 11) % 2)
            stripes = 0.05 * np.sin(xx * 1.3)
            planes.append(np.clip(smooth * 0.7 + edges + stripes, 0, 1))
        frames.append(np.stack(planes))
    return torch.from_numpy(np.stack(frames).astype(np.float32))


@pytest.mark.parametrize("sigma", [5, 10, 20, 30, 40])
def test_estimate_is_within_one_and_a_half_of_the_true_sigma(sigma: float) -> None:
    clean = texture(96, 128, t=3)
    g = torch.Generator().manual_seed(sigma)
    noisy = (clean + torch.randn(clean.shape, generator=g) * sigma / 255).clamp(0, 1)
    assert abs(estimate_sigma(noisy) - sigma) < 1.5
    assert abs(estimate_sigma(noisy[0]) - sigma) < 2.0  # one (C, H, W) frame


def test_a_clean_picture_measures_low() -> None:
    assert estimate_sigma(texture(96, 128)) < 2.0


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="estimate_sigma: frames must be"):
        estimate_sigma(torch.zeros(3, 2, 40))


def noisy_clip(sigmas: list[float], w: int = 128, h: int = 96) -> vs.VideoNode:
    """One frame per entry, noise of that level; a scene cut wherever the level changes."""
    blank = core.std.BlankClip(format=vs.RGBS, width=w, height=h, length=len(sigmas), keep=True)
    clean = texture(h, w)[0]

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        g = torch.Generator().manual_seed(n)
        x = (clean + torch.randn(clean.shape, generator=g) * sigmas[n] / 255).clamp(0, 1)
        cut = int(n > 0 and sigmas[n] != sigmas[n - 1])
        return tensor_to_frame(x, f, props={"_SceneChangePrev": cut})

    return core.std.ModifyFrame(blank, blank, fill)


def test_rvrt_without_sigma_estimates_each_scene_once(caplog: pytest.LogCaptureFixture) -> None:
    levels = [10.0, 10.0, 30.0, 30.0]
    clip = noisy_clip(levels)
    calls: list[int] = []

    def counting(frames: torch.Tensor) -> float:
        calls.append(frames.shape[0])
        return estimate_sigma(frames)

    node, restorer = rvrt_with_restorer(clip, device="cpu", attention="exact")
    restorer.estimator = counting
    with caplog.at_level(logging.INFO, logger="vsnystra"):
        got = [float(node.get_frame(n).props["nystra_sigma"]) for n in range(4)]
    assert calls == [2, 2]  # once per scene, from the scene's frames only
    for want, level in zip(levels, got, strict=True):
        assert abs(level - want) < 2.0
    assert sum("estimated noise level" in r.getMessage() for r in caplog.records) == 2


def test_rvrt_given_sigma_wins() -> None:
    node, restorer = rvrt_with_restorer(noisy_clip([20.0, 20.0]), device="cpu", attention="exact", sigma=7.5)
    assert restorer.estimator is None
    assert node.get_frame(1).props["nystra_sigma"] == 7.5
