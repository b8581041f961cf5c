"""Training recipe: MATLAB-compatible imresize, deterministic resumable loop, export loadable by load_model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vsnystra.training.degrade import add_gaussian_noise, imresize, resize_weights, rgb_to_y
from vsnystra.training.loop import RunConfig, Trainer, export, lr_factor
from vsnystra.training.presets import get_preset

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

TINY_SWINIR = {
    "patch": 8,
    "batch": 2,
    "warmup": 2,
    "per_folder": 0,
    "kwargs": {"img_size": 8, "window_size": 4, "depths": [2], "embed_dim": 12, "num_heads": [2]},
}


# -- imresize ------------------------------------------------------------------------------------------------
def test_resize_weights_hand_computed_upscale_row() -> None:
    # x2 upscale of 4 samples, first output: u = 0.75; taps at input 0,1 (1-based) mirror onto inputs 1 and 2.
    # cubic(0.75)=0.2265625, cubic(0.25)=0.8671875 -> input 1; cubic(1.75)=-0.0234375, cubic(1.25)=-0.0703125 -> 2
    w = resize_weights(4, 8, 2.0)
    np.testing.assert_allclose(w[0], [1.09375, -0.09375, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)


def test_resize_weights_antialiased_downscale_kernel() -> None:
    # /2 with antialiasing: the kernel is cubic(x/2)/2 over 8 taps; output i (1-based) sits at u = 2i - 0.5
    w = resize_weights(16, 8, 0.5)
    dist = 7.5 - np.arange(1, 17)  # output 4 -> u = 7.5
    expected = 0.5 * np.array([_cubic(0.5 * t) for t in dist])
    np.testing.assert_allclose(w[3], expected / expected.sum(), atol=1e-12)
    assert (w[3] > 0).sum() == 4 and (w[3] < 0).sum() == 4  # wider than the plain 4-tap cubic


def _cubic(x: float) -> float:
    a = abs(x)
    if a <= 1:
        return 1.5 * a**3 - 2.5 * a**2 + 1
    if a <= 2:
        return -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2
    return 0.0


def test_imresize_constant_and_shape() -> None:
    img = torch.full((3, 21, 34), 0.37, dtype=torch.float64)
    out = imresize(img, 0.5)
    assert out.shape == (3, 11, 17)
    torch.testing.assert_close(out, torch.full_like(out, 0.37), rtol=0, atol=1e-12)
    up = imresize(img, 2.0)
    assert up.shape == (3, 42, 68)
    torch.testing.assert_close(up, torch.full_like(up, 0.37), rtol=0, atol=1e-12)


def test_imresize_differs_from_plain_bicubic() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 1, 32, 32, generator=g, dtype=torch.float64)
    ours = imresize(img, 0.5)
    plain = torch.nn.functional.interpolate(img, scale_factor=0.5, mode="bicubic", align_corners=False)
    assert (ours - plain).abs().max() > 1e-3  # antialiasing changes the result


@pytest.mark.skipif(not (SHARED / "data/images/Set5/HR").is_dir(), reason="shared data not available")
def test_imresize_reproduces_benchmark_lr_bit_exactly() -> None:
    hr_path = SHARED / "data/images/Set5/HR/bird.png"
    lr_path = SHARED / "data/images/Set5/LR_bicubic/X2/birdx2.png"
    hr = torch.from_numpy(np.array(Image.open(hr_path).convert("RGB"))).permute(2, 0, 1).double() / 255
    lr = torch.from_numpy(np.array(Image.open(lr_path).convert("RGB"))).permute(2, 0, 1).double()
    ours = imresize(hr, 0.5, uint8=True) * 255
    assert torch.equal(ours.round(), lr)


def test_noise_and_luma() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(1, 3, 64, 64)
    y = add_gaussian_noise(x, 25.0, g)
    assert abs(float(y.std()) - 25 / 255) < 0.01 * 25 / 255 * 10
    white = torch.ones(3, 2, 2)
    torch.testing.assert_close(rgb_to_y(white), torch.full((2, 2), 235 / 255))


def test_lr_schedule() -> None:
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(100, 100, 10) == pytest.approx(0.01)


# -- loop ----------------------------------------------------------------------------------------------------
@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        base = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
        Image.fromarray(base).resize((36, 40), Image.BILINEAR).save(folder / f"{i}.png")
    return folder


def _trainer(folder: Path, run: Path, steps: int) -> Trainer:
    preset = get_preset("swinir-x2-small", TINY_SWINIR)
    return Trainer(preset, RunConfig(data=[folder], run_dir=run, steps=steps, save_every=2, log_every=1))


def test_resume_is_bit_exact_and_export_loads(image_folder: Path, tmp_path: Path) -> None:
    from vsnystra.archs.registry import load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        straight = _trainer(image_folder, tmp_path / "a", 4)
        straight.run()
        assert len(straight.losses) == 4 and all(np.isfinite(straight.losses))

        first = _trainer(image_folder, tmp_path / "b", 4)
        first.train_step()
        first.train_step()
        first.save()
        second = _trainer(image_folder, tmp_path / "b", 4)
        second.load(tmp_path / "b" / "last.pt")
        second.run()
    finally:
        torch.set_num_threads(threads)
    assert second.step == 4
    assert second.losses == straight.losses  # same batches, same noise, same updates
    for (k, a), b in zip(straight.model.state_dict().items(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k

    path = export(second.model.state_dict(), "swinir", tmp_path / "tiny.pth", fp16=True)
    ck = torch.load(path, weights_only=True)
    assert set(ck) == {"params"} and ck["params"]["conv_first.weight"].dtype == torch.float16
    model = load_model(path)
    assert model.info.arch == "swinir" and model.info.scale == 2
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        ref = second.model.eval()(x)
        got = model(x)
    assert got.shape == (1, 3, 16, 16)
    torch.testing.assert_close(got, ref, atol=2e-2, rtol=0)  # fp16 storage only


def test_resume_refuses_other_configuration(image_folder: Path, tmp_path: Path) -> None:
    a = _trainer(image_folder, tmp_path / "c", 2)
    a.save()
    other = Trainer(
        get_preset("swinir-x2-small", {**TINY_SWINIR, "kwargs": {**TINY_SWINIR["kwargs"], "embed_dim": 8}}),
        RunConfig(data=[image_folder], run_dir=tmp_path / "c", steps=2),
    )
    with pytest.raises(ValueError, match="another model configuration"):
        other.load(tmp_path / "c" / "last.pt")


def test_denoise_batch_adds_sigma_map_for_video(tmp_path: Path) -> None:
    seq = tmp_path / "seq" / "a"
    seq.mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((20, 24, 3), 40 * i, dtype=np.uint8)).save(seq / f"{i:05d}.png")
    trainer = Trainer.__new__(Trainer)  # data path only: no model needed
    trainer.preset = get_preset("rvrt-denoise-small", {"patch": 16, "batch": 2, "frames": 4})
    trainer.cfg = RunConfig(data=[tmp_path / "seq"], run_dir=tmp_path, steps=1)
    trainer.gen = torch.Generator().manual_seed(0)
    trainer.source = trainer._make_source()
    trainer.stills = None
    noisy, clean = trainer.batch()
    assert noisy.shape == (2, 4, 4, 16, 16) and clean.shape == (2, 4, 3, 16, 16)
    sigma_map = noisy[:, :, 3]
    assert torch.all(sigma_map == sigma_map[:, :1, :1, :1])  # constant per clip
    assert 0 <= float(sigma_map.max()) <= 50 / 255
    est = (noisy[:, :, :3] - clean).flatten(1).std(dim=1)
    torch.testing.assert_close(est, sigma_map[:, 0, 0, 0], atol=0.02, rtol=0.25)


def test_differentiable_gda_matches_inference_op() -> None:
    from vsnystra.archs.rvrt_gda import deform_attn, deform_attn_autograd

    g = torch.Generator().manual_seed(0)
    b, clip, cq, h, w, heads, groups = 2, 2, 24, 9, 11, 12, 12
    q = torch.randn(b * clip, cq, h, w, generator=g, dtype=torch.float64)
    kv = torch.randn(b, clip, 2 * cq, h, w, generator=g, dtype=torch.float64)
    off = 3 * torch.randn(b * clip, clip * groups * 9 * 2, h, w, generator=g, dtype=torch.float64)
    ref = deform_attn(q, kv, off, heads=heads, groups=groups, clip=clip)
    off.requires_grad_(True)
    got = deform_attn_autograd(q, kv, off, heads=heads, groups=groups, clip=clip)
    torch.testing.assert_close(got.detach(), ref, rtol=0, atol=1e-12)
    got.sum().backward()
    assert off.grad is not None and off.grad.abs().sum() > 0


def test_zero_flow_shortcut_equals_frozen_spynet() -> None:
    """The training shortcut skips SpyNet; that is exact only because identity_spynet makes it return zero flow."""
    from vsnystra.training.loop import build_model, zero_flows

    preset = get_preset("rvrt-denoise-small", {"kwargs": {"embed_dims": [24, 24, 24], "num_heads": [2, 2, 2]}})
    model = build_model(preset, seed=0).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 4, 4, 136, 136, generator=g)
    with torch.no_grad():
        flows = model.compute_flows(x[:, :, :3, ::4, ::4])
        assert all(float(f.abs().max()) == 0.0 for f in flows)
        ref = model(x)
        with zero_flows(model, True):
            got = model(x)
        assert "compute_flows" not in vars(model)  # restored after the step
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_rvrt_denoiser_starts_as_a_box_filter_blend() -> None:
    """The compact RVRT starts as x - alpha (x - blockmean4x4(x)): full-resolution detail flows from the first step."""
    import torch.nn.functional as F

    from vsnystra.training.loop import build_model, zero_flows

    model = build_model(get_preset("rvrt-denoise-small"), seed=0).eval()
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    clean = torch.stack([0.2 + 0.6 * xx, 0.5 + 0.3 * torch.sin(6 * yy), 0.4 * (xx + yy)])
    clean = clean.expand(1, 4, 3, 64, 64)
    noisy = clean + 0.08 * torch.randn(clean.shape, generator=g)
    x = torch.cat([noisy, torch.full_like(noisy[:, :, :1], 0.08)], dim=2)
    with torch.no_grad(), zero_flows(model, True):
        out = model(x)
    block = F.interpolate(F.avg_pool2d(noisy[0], 4), scale_factor=4, mode="nearest")
    designed = noisy[0] - 0.5 * (noisy[0] - block)
    assert float((out[0] - designed).abs().max()) < 0.1
    mse_in = float(((noisy - clean) ** 2).mean())
    mse_out = float(((out - clean) ** 2).mean())
    assert mse_out < 0.5 * mse_in  # > 3 dB better than the noisy input before any training


def test_init_fine_tunes_from_an_exported_checkpoint(image_folder: Path, tmp_path: Path) -> None:
    first = _trainer(image_folder, tmp_path / "a", 2)
    first.run()
    path = export(first.model.state_dict(), "swinir", tmp_path / "first.pth", fp16=False)
    preset = get_preset("swinir-x2-small", TINY_SWINIR)
    second = Trainer(preset, RunConfig(data=[image_folder], run_dir=tmp_path / "b", steps=2, init=path))
    for (k, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert second.step == 0 and second.init["file"] == "first.pth" and len(second.init["sha256"]) == 64
    second.save()
    resumed = Trainer(preset, RunConfig(data=[image_folder], run_dir=tmp_path / "b", steps=2))
    resumed.load(tmp_path / "b" / "last.pt")
    assert resumed.init == second.init  # the card can still say where the run started

    other = get_preset("swinir-x2-small", {**TINY_SWINIR, "kwargs": {**TINY_SWINIR["kwargs"], "embed_dim": 8}})
    with pytest.raises(ValueError, match="does not fit the preset"):
        Trainer(other, RunConfig(data=[image_folder], run_dir=tmp_path / "c", steps=2, init=path))


def test_card_counts_an_earlier_release_and_refreshes_its_quality_rows(tmp_path: Path) -> None:
    from vsnystra.training import publish

    sha, (steps, minutes, _) = next(iter(publish.PRIOR_RELEASES.items()))
    leg = {"step": 100, "steps": 120, "elapsed": 600.0, "init": {"file": "x.pth", "sha256": sha}}
    (line,) = publish.iteration_lines(leg)
    assert line.startswith(f"- iterations: {steps + 100} in all, {minutes + 10:.1f} min")
    (alone,) = publish.iteration_lines({**leg, "init": {}})
    assert alone.startswith("- iterations: 100 of a 120-step schedule, 10.0 min")

    table = tmp_path / "quality.md"
    table.write_text(
        "# t\n\n## `quality.py --models m`\n\nSettings: s\n\n| model | data |\n|---|---|\n| noisy input | d |\n"
        "| m | d |\n",
        encoding="utf-8",
    )
    old = "# m\n\n## Training\n\n- kept\n\n## Quality (benchmarks/quality.py)\n\n| stale |\n"
    new = publish.refresh_quality(old, "m", table)
    assert "- kept" in new and "| stale |" not in new and "| m | d |" in new and publish.CAVEAT in new
