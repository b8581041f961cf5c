"""RVRT parity with the upstream outputs stored in ../shared/fixtures/parity (families rvrt, pnp_nystra_rvrt).

Fixtures are discovered by globbing *.json and reading ``family``, so hidden fixtures run too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PARITY = SHARED / "fixtures" / "parity"


def _fixtures(families: tuple[str, ...]) -> list[Any]:
    if not PARITY.is_dir():
        return []
    out = []
    for path in sorted(PARITY.glob("*.json")):
        meta = json.loads(path.read_text())
        if meta.get("family") in families:
            out.append(pytest.param(meta, id=meta["name"]))
    return out


def _run(model: torch.nn.Module, meta: dict[str, Any], io: dict[str, Any]) -> torch.Tensor:
    x = io["input"]
    proc = meta["procedure"]
    if proc == "rvrt_sigma_map":
        n, t, _, h, w = x.shape
        sigma = float(io["kwargs"]["sigma"])
        x = torch.cat([x, torch.full((n, t, 1, h, w), sigma / 255.0, dtype=x.dtype)], dim=2)
    elif proc != "forward":
        raise AssertionError(f"unknown procedure {proc}")
    with torch.no_grad():
        return model(x)


def _check(y: torch.Tensor, ref: torch.Tensor) -> None:
    assert y.shape == ref.shape
    diff = (y - ref).abs().max().item()
    tol = 1e-4 * max(1.0, ref.abs().max().item())
    assert diff <= tol, f"max|Δ| = {diff:.3g} > {tol:.3g}"


@pytest.mark.parametrize("meta", _fixtures(("rvrt",)))
def test_rvrt_fixture(meta: dict[str, Any]) -> None:
    from vsnystra import load_model

    model = load_model(PARITY / meta["checkpoint"], **meta.get("load_overrides", {}))
    assert model.info.arch == "rvrt"
    assert model.info.needs_sigma == (meta["procedure"] == "rvrt_sigma_map")
    io = torch.load(PARITY / f"{meta['name']}.io.pt", weights_only=True)
    _check(_run(model, meta, io), io["output"])


@pytest.mark.parametrize("meta", _fixtures(("pnp_nystra_rvrt",)))
def test_pnp_rvrt_fixture(meta: dict[str, Any]) -> None:
    from vsnystra import Exact, PnPNystra, load_model, patch_attention

    model = load_model(PARITY / meta["checkpoint"], **meta.get("load_overrides", {}))
    io = torch.load(PARITY / f"{meta['name']}.io.pt", weights_only=True)
    patch = dict(meta["pnp"]["patch"])
    # same enlarged window, bias and mask dropped, exact attention: the research code's "original" mech
    patch_attention(model, Exact(), **patch)
    _check(_run(model, meta, io), io["output_original"])
    spec = meta["pnp"]["spec"]
    patch_attention(
        model, PnPNystra(landmarks=spec["landmarks"], iters=spec["iters"], threshold=spec["threshold"]), **patch
    )
    _check(_run(model, meta, io), io["output"])


def test_flip_back_to_exact_restores_stock_output() -> None:
    """patch_attention(model, Exact()) with the trained window gives the unpatched output back."""
    from vsnystra import Exact, Naive, load_model, patch_attention

    metas = [p.values[0] for p in _fixtures(("rvrt",)) if p.values[0]["name"] == "rvrt_sr_small"]
    if not metas:
        pytest.skip("rvrt_sr_small fixture not available")
    meta = metas[0]
    model = load_model(PARITY / meta["checkpoint"])
    io = torch.load(PARITY / f"{meta['name']}.io.pt", weights_only=True)
    x = io["input"][:, :2]
    with torch.no_grad():
        ref = model(x)
        patch_attention(model, Naive(), window=[2, 16, 16], bias="drop", mask="drop")
        moved = model(x)
        patch_attention(model, Exact())
        back = model(x)
    assert (moved - ref).abs().max() > 1e-3
    assert (back - ref).abs().max() <= 1e-6
    with pytest.raises(ValueError, match="bias='drop'"):
        patch_attention(model, Exact(), window=[2, 16, 16])  # no trained bias for a larger window
    stls = [m for m in model.modules() if hasattr(m, "configure_attention")]
    patch_attention(model, Exact(), window=[2, 64, 64], bias="drop", mask="drop")
    assert {m.window for m in stls} == {(2, 64, 64), (1, 64, 64)}  # [1,8,8] layers keep one frame


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("meta", _fixtures(("rvrt",)))
def test_rvrt_fixture_cuda(meta: dict[str, Any]) -> None:
    """Same fixtures on CUDA in fp32 (pure-PyTorch GDA, no compiled extension) and fp16 within 5e-2."""
    from vsnystra import load_model

    model = load_model(PARITY / meta["checkpoint"]).cuda()
    io = torch.load(PARITY / f"{meta['name']}.io.pt", weights_only=True)
    io["input"] = io["input"].cuda()
    _check(_run(model, meta, io).cpu(), io["output"])
    io["input"] = io["input"].half()
    y16 = _run(model.half(), meta, io).float().cpu()
    assert (y16 - io["output"]).abs().max().item() <= 5e-2 * max(1.0, io["output"].abs().max().item())
