"""SwinIR / Uformer parity with the upstream outputs in ../shared/fixtures/parity.

Fixtures are discovered by globbing *.json and reading ``family`` (swinir, uformer, pnp_nystra_swinir,
pnp_nystra_uformer), so hidden fixtures with other seeds and sizes run too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from vsnystra import Exact, PnPNystra, load_model, patch_attention, restore_image

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PARITY = SHARED / "fixtures" / "parity"


def _fixtures(families: tuple[str, ...]) -> list[Any]:
    if not PARITY.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{PARITY} missing"))]
    out = []
    for path in sorted(PARITY.glob("*.json")):
        meta = json.loads(path.read_text())
        if meta.get("family") in families:
            out.append(pytest.param(meta, id=meta["name"]))
    return out


def _load(meta: dict[str, Any]) -> tuple[torch.nn.Module, dict[str, Any]]:
    model = load_model(PARITY / meta["checkpoint"], **meta.get("load_overrides", {}))
    io = torch.load(PARITY / f"{meta['name']}.io.pt", weights_only=True)
    return model, io


def _run(model: torch.nn.Module, meta: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
    proc = meta["procedure"]
    if proc == "swinir_test_pad":
        return restore_image(model, x)
    assert proc == "forward", f"unknown procedure {proc}"
    with torch.no_grad():
        return model(x)


def _check(y: torch.Tensor, ref: torch.Tensor) -> None:
    assert y.shape == ref.shape, f"shape {tuple(y.shape)} != {tuple(ref.shape)}"
    diff = (y - ref).abs().max().item()
    tol = 1e-4 * max(1.0, ref.abs().max().item())
    assert diff <= tol, f"max|Δ| = {diff:.3g} > {tol:.3g}"


@pytest.mark.parametrize("meta", _fixtures(("swinir", "uformer")))
def test_upstream_parity(meta: dict[str, Any]) -> None:
    model, io = _load(meta)
    _check(_run(model, meta, io["input"]), io["output"])


@pytest.mark.parametrize("meta", _fixtures(("pnp_nystra_swinir", "pnp_nystra_uformer")))
def test_pnp_research_parity(meta: dict[str, Any]) -> None:
    model, io = _load(meta)
    pnp = meta["pnp"]
    patch_attention(model, Exact(), **pnp["patch"])
    _check(_run(model, meta, io["input"]), io["output_original"])
    patch_attention(model, PnPNystra(**pnp["spec"]), **pnp["patch"])
    _check(_run(model, meta, io["input"]), io["output"])


@pytest.mark.parametrize("meta", _fixtures(("swinir", "uformer"))[:1] + _fixtures(("uformer",))[:1])
def test_parity_detects_a_dropped_bias(meta: dict[str, Any]) -> None:
    """The parity check can fail: dropping the relative-position bias moves the output beyond tolerance."""
    model, io = _load(meta)
    patch_attention(model, Exact(), bias="drop")
    with pytest.raises(AssertionError):
        _check(_run(model, meta, io["input"]), io["output"])
