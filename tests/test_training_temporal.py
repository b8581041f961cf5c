"""The RVRT denoiser's temporal start and the synthetic-camera clips it trains on."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vsnystra.archs.rvrt_gda import differentiable_gda
from vsnystra.training.loop import RunConfig, Trainer, build_model, zero_flows
from vsnystra.training.motion import CameraMotion, MotionClips, Trajectory, render
from vsnystra.training.presets import get_preset
from vsnystra.training.rvrt_temporal import supports_temporal_start, temporal_start

TINY = {"kwargs": {"embed_dims": [24, 24, 24], "num_heads": [2, 2, 2]}}


def _clip(frames: int = 6, side: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, frames, 3, side, side, generator=g)
    return torch.cat([x, torch.full_like(x[:, :, :1], 0.1)], dim=2)


def _random_rvrt() -> torch.nn.Module:
    """The preset's space-to-depth start, perturbed like a trained model: features of a realistic scale, and
    propagation branches that contribute to the output."""
    model = build_model(get_preset("rvrt-denoise-small", {"temporal_start": False}), seed=3).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.003 * torch.randn_like(p))
        model.reconstruction.main[1].weight[:, 48:].normal_(0.0, 0.01)
    return model


def test_temporal_start_keeps_the_output_of_the_shallow_path() -> None:
    """Rewired, the model computes what it computed with its propagation branches cut off (up to the anchored
    LayerNorms' ~linearity), so a trained model keeps its quality while every branch becomes a temporal path."""
    model = _random_rvrt()
    cut = copy.deepcopy(model)
    with torch.no_grad():
        cut.reconstruction.main[1].weight[:, 48:] = 0.0
    rewired = copy.deepcopy(model)
    temporal_start(rewired)
    x = _clip()
    with torch.no_grad(), zero_flows(cut, True), zero_flows(rewired, True), zero_flows(model, True):
        ref, got, before = cut(x), rewired(x), model(x)
    err = float((got - ref).pow(2).mean().sqrt())
    assert err < 4e-3  # > 48 dB on a [0, 1] image; white-noise input is the LayerNorms' worst case
    assert float((before - ref).pow(2).mean().sqrt()) > 20 * err  # the original branches did change the output


def test_temporal_start_routes_gradient_to_the_aligned_past() -> None:
    """The first gradient reaches each backbone's weights on the aligned previous clip (zero in the old start,
    where the branches entered the reconstruction through zero weights)."""
    model = _random_rvrt()
    temporal_start(model)
    model.train()
    x = _clip()
    target = x[:, :, :3].mean(dim=1, keepdim=True).expand(-1, x.shape[1], -1, -1, -1)
    with differentiable_gda(), zero_flows(model, True):
        loss = ((model(x) - target) ** 2).mean()
        loss.backward()
    for i, name in enumerate(("backward_1", "forward_1", "backward_2", "forward_2")):
        w = model.backbone[name].main[1].weight
        assert w.grad is not None
        aligned = w.grad[:, (i + 1) * 48 : (i + 2) * 48]
        assert float(aligned.abs().sum()) > 0, name


def test_temporal_start_refuses_grouped_input_convolutions() -> None:
    preset = get_preset(
        "rvrt-denoise-small", {**TINY, "kwargs": {**TINY["kwargs"], "inputconv_groups": [1, 3, 4, 6, 8, 1]}}
    )
    model = build_model(preset, seed=0)
    assert not supports_temporal_start(model)
    with pytest.raises(ValueError, match="inputconv_groups"):
        temporal_start(model)


@pytest.fixture()
def stills(tmp_path: Path) -> Path:
    g = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(g.integers(0, 256, (120, 140, 3), dtype=np.uint8)).save(tmp_path / f"s{i}.png")
    return tmp_path


def test_static_clips_repeat_one_frame(stills: Path) -> None:
    source = MotionClips(sorted(stills.glob("*.png")), frames=5, min_side=32, motion=CameraMotion(static=1.0))
    clip = source.sample(3, 32, torch.Generator().manual_seed(0))
    assert clip.shape == (3, 5, 3, 32, 32) and float(clip.min()) >= 0.0 and float(clip.max()) <= 1.0
    assert torch.equal(clip, clip[:, :1].expand_as(clip))


def test_render_follows_the_trajectory() -> None:
    """Integer pans reproduce shifted crops exactly; zoom and rotation keep the centre pixel in place."""
    g = torch.Generator().manual_seed(0)
    region = torch.rand(1, 3, 41, 41, generator=g)
    clip = render(region, 3, 21, Trajectory(vx=2.0, vy=-1.0))
    for t in range(3):
        ref = region[0, :, 10 - t : 31 - t, 10 + 2 * t : 31 + 2 * t]
        torch.testing.assert_close(clip[t], ref, rtol=0, atol=1e-5)
    turned = render(region, 3, 21, Trajectory(zoom=0.05, rotate=0.1))
    torch.testing.assert_close(turned[:, :, 10, 10], region[0, :, 20, 20].expand(3, -1), rtol=0, atol=1e-5)
    assert float((turned[2] - turned[0]).abs().mean()) > 0.05


def test_moving_clips_move(stills: Path) -> None:
    source = MotionClips(sorted(stills.glob("*.png")), frames=4, min_side=32, motion=CameraMotion(static=0.0))
    clip = source.sample(4, 32, torch.Generator().manual_seed(1))
    assert all(float((c[3] - c[0]).abs().mean()) > 0.01 for c in clip)


def test_trainer_mixes_stills_and_low_sigma_deterministically(stills: Path, tmp_path: Path) -> None:
    seq = tmp_path / "seq" / "a"
    seq.mkdir(parents=True)
    for i in range(6):
        Image.fromarray(np.full((40, 44, 3), 30 * i, dtype=np.uint8)).save(seq / f"{i:05d}.png")

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        trainer = Trainer.__new__(Trainer)  # data path only
        trainer.preset = get_preset("rvrt-denoise-small", {"patch": 32, "batch": 8, "sigma_low": 0.5})
        trainer.cfg = RunConfig(data=[tmp_path / "seq"], run_dir=tmp_path, steps=1, stills=[stills])
        trainer.gen = torch.Generator().manual_seed(0)
        trainer.source = trainer._make_source()
        trainer.stills = MotionClips(sorted(stills.glob("*.png")), 6, 32)
        return trainer.batch()

    (noisy, clean), (noisy2, clean2) = batch(), batch()
    assert torch.equal(noisy, noisy2) and torch.equal(clean, clean2)
    assert noisy.shape == (8, 6, 4, 32, 32)
    flat = clean.flatten(2).std(dim=2).amax(dim=1) < 1e-6  # the synthetic sequence has flat frames
    assert 0 < int(flat.sum()) < 8  # both sources were drawn
    sigma = noisy[:, 0, 3, 0, 0] * 255
    assert bool((sigma <= 2.0).any()) and bool((sigma > 2.0).any())


def _static_restore(fresh: bool) -> float:
    import vsnystra
    from vsnystra.runtime.video import restore_video
    from vsnystra.training.data import read_image
    from vsnystra.zoo import resolve_model

    shared = Path(__file__).resolve().parents[1].parent / "shared"
    frame = sorted((shared / "data/train/DAVIS2016_480p/camel").glob("*.jpg"))[0]
    clean = (read_image(frame).float() / 255)[:, 150:286, 250:386]
    clip = clean.expand(6, -1, -1, -1)
    g = torch.Generator().manual_seed(0)
    shape = clip.shape if fresh else clean.shape
    noisy = clip + torch.randn(shape, generator=g) * 20 / 255
    model = vsnystra.load_model(str(resolve_model("rvrt-denoise-small")))
    with torch.no_grad():
        out = restore_video(model, noisy, sigma=20, chunk=6, chunk_overlap=0)
    return -10 * math.log10(float(((out.clamp(0, 1) - clip) ** 2).mean()))


@pytest.mark.xfail(
    strict=True, reason="rvrt-denoise-small uses time only partly so far (+0.68 dB here); retraining goes on"
)
def test_bundled_rvrt_uses_time_on_a_static_clip() -> None:
    """Fresh noise in every frame of a static shot must restore clearly better than one noise draw repeated in
    every frame (the first release scored the same on both: it ignored time)."""
    fresh, repeated = _static_restore(fresh=True), _static_restore(fresh=False)
    assert fresh >= repeated + 1.0


def test_mixing_gates_blend_with_the_aligned_past_and_fold_into_the_official_layout() -> None:
    from vsnystra.archs.loading import canonical_state_dict
    from vsnystra.training.rvrt_temporal import add_mixing_gates, fold_mixing_gates

    model = _random_rvrt()
    temporal_start(model)
    plain = copy.deepcopy(model)
    add_mixing_gates(model)
    x = _clip()
    with torch.no_grad(), zero_flows(model, True), zero_flows(plain, True):
        torch.testing.assert_close(model(x), plain(x), rtol=0, atol=0)  # mu = 0: nothing changes
        gates = [p for n, p in model.named_parameters() if n.endswith(".mu")]
        assert len(gates) == 4
        for g in gates:
            g.fill_(0.25)
        gated = model(x)
        folded = fold_mixing_gates(model.state_dict())
        assert set(folded) == set(plain.state_dict())
        plain.load_state_dict(canonical_state_dict(folded), strict=True)
        torch.testing.assert_close(plain(x), gated, rtol=0, atol=1e-6)
    conv = plain.backbone["forward_1"].main[1].weight[:, :, 0, 1, 1]
    torch.testing.assert_close(conv[:, 48:96].diagonal(), torch.full((48,), 0.75))  # (1 - mu) freshest input
    torch.testing.assert_close(conv[:, 96:144].diagonal(), torch.full((48,), -0.75))  # aligned: -1 + mu
