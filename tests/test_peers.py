"""benchmarks/peers_lib.py: the pieces of the peers benchmark that can silently be wrong.

The 4x4 phase statistics (a planted 4-pixel pattern must stand out, pure noise must not), the seeded noise (same
seed, same noise; frames drawn in order at full size) and the ffmpeg raw pipe (a filter-free pass is exact).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


peers_lib = _load("peers_lib")
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def test_phase_spread_finds_a_planted_4px_pattern_and_not_noise() -> None:
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((4, 3, 256, 256)) * (3.0 / 255.0)  # a 3-level error, no pattern
    cell = np.zeros((4, 4))
    cell[0, 0] = 2.0 / 255.0  # +2 levels on one pixel of every 4x4 cell
    pattern = np.tile(cell, (64, 64))
    assert peers_lib.phase_spread(noise) < 0.1
    assert peers_lib.phase_spread(noise + pattern) == pytest.approx(2.0, abs=0.05)
    assert peers_lib.quarter_frequency_ratio(noise) < 3.0
    assert peers_lib.quarter_frequency_ratio(noise + pattern) > 100.0
    means = peers_lib.phase_means(noise + pattern)
    assert np.unravel_index(np.argmax(means), means.shape) == (0, 0)


def test_phase_spread_ignores_a_pattern_of_another_period() -> None:
    stripes = np.tile(np.array([1.0, -1.0, 1.0]) / 255.0, 86)[:256]  # period 3: averages out over 4x4 phases
    err = np.broadcast_to(stripes, (256, 256))
    assert peers_lib.phase_spread(err) < 0.05


def test_noise_is_reproducible_and_frame_ordered() -> None:
    clean = [np.full((3, 8, 10), 0.5, dtype=np.float32) for _ in range(3)]
    seed = peers_lib.noise_seed("Vid4", "city", 20.0)
    assert seed == peers_lib.noise_seed("Vid4", "city", 20)  # 20 and 20.0 name the same sigma
    assert seed != peers_lib.noise_seed("Vid4", "walk", 20.0)
    a = peers_lib.add_noise(clean, 20.0, seed)
    b = peers_lib.add_noise(clean, 20.0, seed)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert peers_lib.add_noise(clean[:2], 20.0, seed)[1].tobytes() == a[1].tobytes()  # --frames does not change it
    assert not np.array_equal(a[0], a[1])  # fresh noise in every frame
    assert a[0].dtype == np.float32
    direct = 0.5 + np.random.default_rng(seed).standard_normal((3, 8, 10)) * (20.0 / 255.0)
    np.testing.assert_allclose(a[0], direct.astype(np.float32))
    noise = np.concatenate([x.ravel() - 0.5 for x in a])
    assert abs(noise.std() * 255.0 - 20.0) < 2.0


def test_noise_is_not_clipped() -> None:
    black = [np.zeros((3, 16, 16), dtype=np.float32)]
    out = peers_lib.add_noise(black, 30.0, 7)[0]
    assert (out < 0).any()


def test_psnr_clips_the_output() -> None:
    ref = np.full((3, 4, 4), 1.0, dtype=np.float32)
    assert peers_lib.psnr_rgb(ref + 0.5, ref) == float("inf")
    assert peers_lib.psnr_rgb(ref - 0.1, ref) == pytest.approx(20.0)


def test_mirrored_window() -> None:
    assert peers_lib.mirrored_window(0, 12, 5) == [2, 1, 0, 1, 2]
    assert peers_lib.mirrored_window(11, 12, 5) == [9, 10, 11, 10, 9]
    assert peers_lib.mirrored_window(5, 12, 5) == [3, 4, 5, 6, 7]


@needs_ffmpeg
def test_ffmpeg_float_pipe_round_trip_is_exact() -> None:
    rng = np.random.default_rng(3)
    frames = (rng.standard_normal((3, 3, 24, 40)) * 0.4 + 0.5).astype(np.float32)  # values outside [0, 1] too
    out = peers_lib.ffmpeg_filter(frames, "null")
    assert out.dtype == np.float32
    assert np.array_equal(out, frames)


@needs_ffmpeg
@pytest.mark.parametrize("depth", [8, 16])
def test_ffmpeg_integer_pipes_round_trip_their_levels(depth: int) -> None:
    top = (1 << depth) - 1
    rng = np.random.default_rng(4)
    frames = (rng.integers(0, top + 1, (2, 3, 16, 24)) / top).astype(np.float32)
    out = peers_lib.ffmpeg_filter(frames, "null", depth=depth)
    assert np.array_equal(np.round(out * top), np.round(frames * top))
    assert not np.array_equal(out[:, 0], out[:, 1])  # planes kept apart (no colour conversion)


@needs_ffmpeg
def test_ffmpeg_refuses_a_silent_format_conversion() -> None:
    frames = np.zeros((1, 3, 16, 16), dtype=np.float32)
    with pytest.raises(RuntimeError, match="converted the pixel format"):
        peers_lib.ffmpeg_filter(frames, "format=yuv420p")
