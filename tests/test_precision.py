"""Half precision without failure: the trained bundled models in fp16 and bf16, and the fp32 recompute of tiles whose
half-precision output is not finite (forced with a hook, since the small bundled models do not overflow)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from vsnystra.archs.registry import load_model
from vsnystra.runtime.image import restore_image
from vsnystra.runtime.video import restore_chunk

MODELS = Path(__file__).resolve().parents[1] / "models"
HALF = [torch.float16, torch.bfloat16]


def picture(c: int, h: int, w: int, t: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    shape = (c, h, w) if t is None else (t, c, h, w)
    yy = torch.linspace(0, 1, h).view(h, 1)
    xx = torch.linspace(0, 1, w).view(1, w)
    return (0.5 + 0.3 * torch.sin(6 * xx + 4 * yy) + 0.05 * torch.randn(shape, generator=g)).clamp(0, 1)


def poison_half_outputs(model: nn.Module) -> None:
    """Half-precision forwards return NaN everywhere (fp32 ones, e.g. of a copy of the model, are untouched)."""

    def hook(module: nn.Module, args: object, out: torch.Tensor) -> torch.Tensor:
        return out if out.dtype == torch.float32 else torch.full_like(out, float("nan"))

    model.register_forward_hook(hook)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("name", ["swinir-x2-small.pth", "uformer-denoise-small.pth"])
def test_trained_image_models_run_in_half_precision(name: str, dtype: torch.dtype) -> None:
    x = picture(3, 24, 32)
    ref = load_model(str(MODELS / name))
    half = load_model(str(MODELS / name)).to(dtype)
    with torch.no_grad():
        want = restore_image(ref, x)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no recompute needed on normal content
            got = restore_image(half, x)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    assert (got - want).abs().mean() < 0.01


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("tile", [None, (16, 16)])
def test_non_finite_half_tiles_are_recomputed_in_fp32(dtype: torch.dtype, tile: tuple[int, int] | None) -> None:
    x = picture(3, 24, 32)
    half = load_model(str(MODELS / "swinir-x2-small.pth")).to(dtype)
    ref = load_model(str(MODELS / "swinir-x2-small.pth"))
    poison_half_outputs(half)
    with torch.no_grad():
        with pytest.warns(RuntimeWarning, match="recomputed in fp32"):
            got = restore_image(half, x, tile=tile, tile_overlap=4, fp32_model=lambda: ref)  # the filters' way
        with pytest.warns(RuntimeWarning, match="recomputed in fp32"):
            copied = restore_image(half, x, tile=tile, tile_overlap=4)  # default: an fp32 copy of the half model
        want = restore_image(ref, x.to(dtype).float(), tile=tile, tile_overlap=4)
    assert torch.isfinite(got).all() and torch.isfinite(copied).all()
    assert torch.allclose(got, want, atol=1e-6)
    assert (copied - want).abs().max() < 0.02  # the copy's weights were rounded to half precision


@pytest.mark.parametrize("dtype", HALF)
def test_rvrt_chunks_recompute_non_finite_half_output_in_fp32(dtype: torch.dtype) -> None:
    frames = picture(3, 40, 48, t=2)
    half = load_model(str(MODELS / "rvrt-denoise-small.pth")).to(dtype)
    poison_half_outputs(half)
    fallback = load_model(str(MODELS / "rvrt-denoise-small.pth"))
    with torch.no_grad():
        with pytest.warns(RuntimeWarning, match="recomputed in fp32"):
            got = restore_chunk(half, frames, sigma=15.0, fp32_model=lambda: fallback)
        want = restore_chunk(fallback, frames.to(dtype).float(), sigma=15.0)
    assert got.dtype == dtype and torch.isfinite(got).all()
    # the same fp32 forward, up to the sigma map, which entered in half precision (15/255 rounded)
    assert (got.float() - want).abs().max() < 5e-3


def test_a_frame_of_failing_tiles_warns_once() -> None:
    """Every tile of two frames is recomputed, with one warning under Python's default warning filter."""
    x = picture(3, 24, 32)
    half = load_model(str(MODELS / "swinir-x2-small.pth")).to(torch.bfloat16)
    ref = load_model(str(MODELS / "swinir-x2-small.pth"))
    poison_half_outputs(half)
    recomputes: list[int] = []
    ref.register_forward_hook(lambda module, args, out: recomputes.append(1))
    with warnings.catch_warnings(record=True) as seen, torch.no_grad():
        warnings.simplefilter("default")
        for _ in range(2):
            restore_image(half, x, tile=(16, 16), tile_overlap=4, fp32_model=lambda: ref)
    assert len(recomputes) >= 4  # several tiles per frame were recomputed
    assert len([w for w in seen if "recomputed in fp32" in str(w.message)]) == 1
