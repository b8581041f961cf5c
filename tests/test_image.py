"""restore_image: official padding rules, tiling, layouts, dtypes, and the patch_attention flip test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vsnystra import Exact, PnPNystra, load_model, patch_attention, restore_image
from vsnystra.runtime.image import mirror_past_pad, padded_forward, size_requirements
from vsnystra.runtime.tiling import run_tiled, tile_starts

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PARITY = SHARED / "fixtures" / "parity"
BABY = SHARED / "data" / "images" / "Set5" / "HR" / "baby.png"


def _baby_crop(top: int, left: int, h: int, w: int) -> torch.Tensor:
    from PIL import Image

    rgb = np.array(Image.open(BABY).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(rgb[top : top + h, left : left + w]).permute(2, 0, 1).contiguous()


@pytest.fixture(scope="module")
def swinir_x2() -> torch.nn.Module:
    return load_model(PARITY / "swinir_classical_x2.pth")


@pytest.fixture(scope="module")
def uformer() -> torch.nn.Module:
    return load_model(PARITY / "uformer_b_small.pth")


# ---- tiling ----------------------------------------------------------------------------------------------------


def test_tiled_matches_untiled_on_real_image() -> None:
    """Default overlap, tile 48, on a Set5 crop: < 1/255.

    The fixture weights are deliberately hypersensitive (large random perturbations, so every pixel sees most of
    the image); a trained denoiser predicts a small residual, which is mimicked by scaling the last conv ×0.1.
    """
    model = load_model(PARITY / "swinir_colordn.pth")
    with torch.no_grad():
        model.conv_last.weight.mul_(0.1)
        model.conv_last.bias.mul_(0.1)
    x = _baby_crop(100, 120, 96, 112)
    full = restore_image(model, x)
    tiled = restore_image(model, x, tile=48)
    assert tiled.shape == full.shape == x.shape
    assert (full - tiled).abs().max().item() < 1 / 255


def test_ramp_blend_beats_flat_average(swinir_x2: torch.nn.Module) -> None:
    """On the raw fixture model the cross-fade is far closer to the untiled output than upstream's flat mean."""
    x = _baby_crop(100, 120, 96, 112)[None]
    with torch.no_grad():
        full = padded_forward(swinir_x2, x)
        ramp = run_tiled(lambda t: padded_forward(swinir_x2, t), x, (48, 48), 32, 2, blend="ramp")
        flat = run_tiled(lambda t: padded_forward(swinir_x2, t), x, (48, 48), 32, 2, blend="flat")
    assert (full - ramp).abs().max() < 0.25 * (full - flat).abs().max()


@pytest.mark.parametrize(("tile", "overlap"), [((17, 23), 5), ((32, 32), 0), ((40, 9), 8)])
def test_tiling_exact_for_a_local_operator(tile: tuple[int, int], overlap: int) -> None:
    """A per-pixel operator (nearest ×3 upscaling) must come out of the tiler unchanged: offsets, scale, weights."""
    x = torch.rand(2, 3, 50, 61, generator=torch.Generator().manual_seed(0))

    def op(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t * 2 - 0.3, scale_factor=3, mode="nearest")

    out = run_tiled(op, x, tile, overlap, 3)
    # the cross-fade computes sum(w·v) / sum(w): equal up to fp32 rounding relative to |v| (values up to 1.7)
    torch.testing.assert_close(out, op(x), rtol=2e-6, atol=1e-6)


def test_tile_starts_cover_and_end_flush() -> None:
    assert tile_starts(100, 48, 32) == [0, 16, 32, 48, 52]
    assert tile_starts(40, 64, 32) == [0]


def test_rectangular_tile_is_width_height(swinir_x2: torch.nn.Module) -> None:
    x = _baby_crop(0, 0, 40, 64)
    out = restore_image(swinir_x2, x, tile=(64, 24))  # one tile wide, two tall
    assert out.shape == (3, 80, 128) and torch.isfinite(out).all()


# ---- padding rules -----------------------------------------------------------------------------------------------


def test_swinir_pad_always_adds_and_mirrors_the_edge_row() -> None:
    x = torch.arange(27 * 32, dtype=torch.float32).view(1, 1, 27, 32)
    y = mirror_past_pad(x, 8)
    assert y.shape[-2:] == (32, 40)  # 27 -> 32; 32 (already a multiple) -> 40
    torch.testing.assert_close(y[..., 27:32, :32], x.flip(-2)[..., :5, :])  # edge row repeated first
    torch.testing.assert_close(y[..., :27, 32:40], x.flip(-1)[..., :8])


def test_swinir_pad_tiny_input_keeps_mirroring() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0]]).view(1, 1, 1, 3)
    y = mirror_past_pad(x, 8)
    assert y.shape[-2:] == (8, 8)
    assert y[0, 0, 0].tolist() == [1, 2, 3, 3, 2, 1, 1, 2]


def test_swinir_tiny_image_restores(swinir_x2: torch.nn.Module) -> None:
    out = restore_image(swinir_x2, torch.rand(3, 5, 6))
    assert out.shape == (3, 10, 12) and torch.isfinite(out).all()


def test_uformer_expand2square_centres_and_crops(uformer: torch.nn.Module) -> None:
    x = _baby_crop(10, 20, 60, 100)
    out = restore_image(uformer, x)
    canvas = torch.zeros(1, 3, 128, 128)
    top, left = (128 - 60) // 2, (128 - 100) // 2
    canvas[..., top : top + 60, left : left + 100] = x
    with torch.no_grad():
        ref = uformer(canvas)[0, :, top : top + 60, left : left + 100]
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    assert size_requirements(uformer).square and size_requirements(uformer).multiple_of == 128


def test_layouts_and_dtypes(swinir_x2: torch.nn.Module) -> None:
    x = torch.rand(2, 3, 16, 24, dtype=torch.float64)
    batch = restore_image(swinir_x2, x)
    assert batch.dtype == torch.float64 and batch.shape == (2, 3, 32, 48)
    single = restore_image(swinir_x2, x[1])
    torch.testing.assert_close(single, batch[1], rtol=0, atol=1e-6)


def test_wrong_channel_count_is_explained(swinir_x2: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match=r"restore_image: the model expects 3 channel"):
        restore_image(swinir_x2, torch.rand(1, 16, 16))


# ---- flip test and reduced precision ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["swinir_classical_x2.pth", "uformer_b_small.pth"])
def test_patch_then_exact_restores_the_unpatched_output(name: str) -> None:
    model = load_model(PARITY / name)
    x = torch.rand(1, 3, 128, 128) if "uformer" in name else torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        patch_attention(model, PnPNystra(landmarks=16, iters=2), window=16, bias="drop", mask="drop", modulator="drop")
        patched = model(x)
        patch_attention(model, Exact())
        back = model(x)
    assert (patched - ref).abs().max() > 1e-3  # the patch really changed something
    torch.testing.assert_close(back, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_cpu_runs_finite(swinir_x2: torch.nn.Module, dtype: torch.dtype) -> None:
    model = load_model(PARITY / "swinir_classical_x2.pth").to(dtype)
    x = _baby_crop(0, 0, 24, 32)
    out = restore_image(model, x)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - restore_image(swinir_x2, x)).abs().max() < 0.1


@pytest.mark.cuda
def test_cuda_fp16_matches_fp32() -> None:
    model = load_model(PARITY / "swinir_classical_x2.pth").cuda()
    x = _baby_crop(0, 0, 48, 64)
    ref = restore_image(model, x)
    assert ref.device.type == "cpu"
    half = restore_image(model.half(), x.cuda())
    assert half.device.type == "cuda" and half.dtype == torch.float32
    assert (half.cpu() - ref).abs().max() < 2e-2


def test_enlarged_window_pads_to_it_and_clamps_on_the_input() -> None:
    """Window 64 on a checkpoint trained at img_size 48: the model pads to 64 and shifts only when the input spans
    more than one window (the research code's clamp, decided by the actual input size)."""
    model = load_model(PARITY / "swinir_classical_x2.pth")
    patch_attention(model, Exact(), window=64, bias="drop", mask="drop")
    assert size_requirements(model).multiple_of == 64
    blocks = [m for m in model.modules() if hasattr(m, "enlarged")]
    assert all(b.enlarged and b.window == 64 for b in blocks)
    assert [b.shift for b in blocks] == [0, 32, 0, 32]
    out = restore_image(model, _baby_crop(0, 0, 40, 50))
    assert out.shape == (3, 80, 100) and torch.isfinite(out).all()
    x = _baby_crop(0, 0, 64, 64)[None]
    with torch.no_grad():
        one_window = model(x)
        for b in blocks:
            b.shift = 0
        no_shift = model(x)
    torch.testing.assert_close(one_window, no_shift, rtol=0, atol=0)
