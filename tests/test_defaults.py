"""Bundled defaults: listed in models/zoo.json with a matching sha256, <= 8 MB, a card, loadable and sane."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from vsnystra.archs.registry import load_model

MODELS = Path(__file__).resolve().parents[1] / "models"
NAMES = {"rvrt-denoise-small": "rvrt", "swinir-x2-small": "swinir", "uformer-denoise-small": "uformer"}
LIMIT = 8 * 1024 * 1024


def _zoo() -> dict[str, dict[str, str]]:
    path = MODELS / "zoo.json"
    if not path.is_file():
        pytest.fail("models/zoo.json is missing; run python -m vsnystra.training.publish")
    data: dict[str, dict[str, str]] = json.loads(path.read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("name", sorted(NAMES))
def test_default_is_indexed_small_and_documented(name: str) -> None:
    entry = _zoo().get(name)
    assert entry is not None, f"{name} not in models/zoo.json"
    pth = MODELS / entry["file"]
    assert pth.is_file()
    assert pth.stat().st_size <= LIMIT, f"{pth.name} is {pth.stat().st_size} bytes > 8 MB"
    assert hashlib.sha256(pth.read_bytes()).hexdigest() == entry["sha256"]
    assert entry["arch"] == NAMES[name]
    card = MODELS / entry["card"]
    assert card.is_file() and name in card.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(NAMES))
def test_card_names_data_relative_to_the_repository(name: str) -> None:
    """No absolute path of the machine a model was trained on (issue 20): data is named from the checkout."""
    import re

    text = (MODELS / _zoo()[name]["card"]).read_text(encoding="utf-8")
    absolute = re.findall(r"(?<![\w.~/-])/(?:[\w.-]+/)+[\w.-]*", text)
    assert not [p for p in absolute if not p.startswith(("/s", "/frame"))], absolute  # units like "ms/step" aside


@pytest.mark.parametrize("name", sorted(NAMES))
def test_default_loads_like_an_official_checkpoint(name: str) -> None:
    pth = MODELS / _zoo()[name]["file"]
    ck = torch.load(pth, map_location="cpu", weights_only=True)
    assert set(ck) & {"params", "state_dict"}, "official container expected"
    model = load_model(pth)
    assert model.info.arch == NAMES[name]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp16 storage is upcast


def test_swinir_default_beats_bilinear_on_a_smooth_picture() -> None:
    from vsnystra.runtime.image import restore_image
    from vsnystra.sample import picture
    from vsnystra.training.degrade import imresize
    from vsnystra.training.metrics import psnr

    hr = torch.from_numpy(picture(96, 64)).permute(2, 0, 1).contiguous()
    lr = imresize(hr.double(), 0.5, uint8=True).float()
    model = load_model(MODELS / "swinir-x2-small.pth")
    with torch.no_grad():
        out = restore_image(model, lr)
    assert out.shape == hr.shape
    up = torch.nn.functional.interpolate(lr[None], scale_factor=2, mode="bilinear", align_corners=False)[0]
    assert psnr(out, hr, crop=2) > psnr(up, hr, crop=2)


def test_uformer_default_denoises() -> None:
    from vsnystra.runtime.image import restore_image
    from vsnystra.sample import picture
    from vsnystra.training.metrics import psnr

    clean = torch.from_numpy(picture(128, 128)).permute(2, 0, 1).contiguous()
    g = torch.Generator().manual_seed(0)
    noisy = clean + torch.randn(clean.shape, generator=g) * (25 / 255)
    model = load_model(MODELS / "uformer-denoise-small.pth")
    with torch.no_grad():
        out = restore_image(model, noisy)
    assert psnr(out, clean) > psnr(noisy, clean) + 3.0


def test_rvrt_default_denoises_the_sample_clip() -> None:
    from vsnystra.runtime.video import restore_video
    from vsnystra.sample import sample_frames
    from vsnystra.training.metrics import psnr

    noisy, clean = sample_frames(frames=2, width=136, height=136, sigma=20.0)
    x = torch.from_numpy(noisy).permute(0, 3, 1, 2).contiguous()
    ref = torch.from_numpy(clean).permute(0, 3, 1, 2)
    model = load_model(MODELS / "rvrt-denoise-small.pth")
    assert model.info.needs_sigma
    with torch.no_grad():
        out = restore_video(model, x, sigma=20.0, chunk=None)
    assert isinstance(out, torch.Tensor) and out.shape == x.shape
    before = sum(psnr(a, b) for a, b in zip(x, ref, strict=True)) / 2
    after = sum(psnr(a, b) for a, b in zip(out, ref, strict=True)) / 2
    assert after > before + 1.0
