"""SpyNet training for the bundled RVRT: exact flow of layered still scenes, level supervision, install."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vsnystra.archs.spynet import SpyNet, flow_warp
from vsnystra.training.flow import install, level_loss, load_spynet
from vsnystra.training.flow_data import FlowPairs, FlowScene


@pytest.fixture()
def stills(tmp_path: Path) -> Path:
    """Smooth random photographs (low-pass noise), so bicubic warps are accurate and errors measure geometry."""
    g = np.random.default_rng(0)
    folder = tmp_path / "stills"
    folder.mkdir()
    for i in range(3):
        small = g.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(small).resize((400, 400), Image.BICUBIC).save(folder / f"s{i}.png")
    return folder


def _warp_error(clean: torch.Tensor, flow: torch.Tensor) -> float:
    warped = flow_warp(clean[1:2], flow.unsqueeze(0).permute(0, 2, 3, 1), padding_mode="border")
    return float((warped[0] - clean[0]).abs()[:, 4:-4, 4:-4].mean())


@pytest.mark.parametrize("objects", [0, 3])
def test_ground_truth_flow_aligns_the_pair_better_than_any_perturbation(stills: Path, objects: int) -> None:
    pairs = FlowPairs(sorted(stills.glob("*.png")), size=32, scene=FlowScene(objects=objects, static=0.0))
    gen = torch.Generator().manual_seed(3)
    checked = 0
    for _ in range(4):
        _, _, clean, flow = pairs.one(gen)
        if float(flow.abs().max()) < 0.5:
            continue
        best = _warp_error(clean, flow)
        shift = torch.tensor([0.5, -0.5]).view(2, 1, 1)
        for other in (-flow, 0.7 * flow, 1.3 * flow, flow + shift, torch.zeros_like(flow)):
            assert best < _warp_error(clean, other)
        checked += 1
    assert checked >= 2


def test_pairs_are_shrunk_like_rvrt_feeds_spynet(stills: Path) -> None:
    pairs = FlowPairs(sorted(stills.glob("*.png")), size=32, scene=FlowScene(sigma_max=0.0, static=1.0, objects=0))
    ref, supp, flow = pairs.sample(2, torch.Generator().manual_seed(0))
    assert ref.shape == supp.shape == (2, 3, 32, 32) and flow.shape == (2, 2, 32, 32)
    assert float(flow.abs().max()) < 1e-9 and torch.allclose(ref, supp, atol=1e-6)


def test_forward_is_the_last_level_and_a_fresh_net_predicts_almost_no_flow() -> None:
    net = load_spynet(None)
    a, b = torch.rand(2, 1, 3, 64, 64)
    levels = net.level_flows(a, b)
    assert [f.shape[-1] for f in levels] == [2, 4, 8, 16, 32, 64]
    assert torch.equal(net(a, b), levels[-1]) and 0 < float(levels[-1].abs().max()) < 0.5
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    assert torch.allclose(net(a, b), net.level_flows(a, b)[-1])


def test_level_loss_is_zero_only_at_the_target_and_trains(stills: Path) -> None:
    pairs = FlowPairs(sorted(stills.glob("*.png")), size=64, scene=FlowScene(objects=0, static=0.0))
    gen = torch.Generator().manual_seed(1)
    ref, supp, flow = pairs.sample(2, gen)
    exact = [F.interpolate(flow, size=(s, s), mode="area") * (s / 64) for s in (2, 4, 8, 16, 32)] + [flow]
    assert float(level_loss(exact, flow)) < 1e-5
    torch.manual_seed(0)
    net = load_spynet(None)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    first = float(level_loss(net.level_flows(ref, supp), flow))
    for _ in range(12):
        loss = level_loss(net.level_flows(ref, supp), flow)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(level_loss(net.level_flows(ref, supp), flow)) < 0.8 * first


def test_install_puts_the_trained_spynet_into_an_rvrt_checkpoint(tmp_path: Path) -> None:
    trained = SpyNet()
    fresh = SpyNet().state_dict().items()
    base = {"params": {"spynet." + k: v.half() if k not in ("mean", "std") else v for k, v in fresh}}
    base["params"]["other.weight"] = torch.ones(3, dtype=torch.float16)
    torch.save(base, tmp_path / "base.pth")
    (tmp_path / "run").mkdir()
    torch.save({"model": trained.state_dict()}, tmp_path / "run" / "last.pt")
    install(tmp_path / "run", tmp_path / "base.pth", tmp_path / "out.pth")
    out = torch.load(tmp_path / "out.pth", weights_only=True)["params"]
    assert torch.equal(out["other.weight"], base["params"]["other.weight"])
    w = "spynet.basic_module.3.basic_module.2.weight"
    assert out[w].dtype == torch.float16 and torch.equal(out[w], trained.state_dict()[w[7:]].half())
    assert torch.equal(load_spynet(tmp_path / "out.pth").state_dict()[w[7:]], out[w].float())
