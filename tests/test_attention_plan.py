"""Per-layer plans (LayerPlan, plan_under_budget, patch_attention with a plan) and PnPNystra.max_error."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from attention_inputs import relative_bias, shift_mask, window_qkv

from vsnystra import load_model, patch_attention
from vsnystra.archs.patch import attention_layers
from vsnystra.attention import Exact, PnPNystra, attention
from vsnystra.attention.check import sampled_error
from vsnystra.attention.plan import LayerPlan, plan_under_budget

SWINIR = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "parity" / "swinir_classical_x2.pth"
NYS = PnPNystra(16, 6, None, "matrix")


def test_plan_validates_and_round_trips_json() -> None:
    plan = LayerPlan((Exact(), NYS, PnPNystra(32, 2, 5.0, max_error=0.4)))
    assert len(plan) == 3 and plan.nystrom_layers == (1, 2)
    assert LayerPlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan
    with pytest.raises(ValueError, match="non-empty"):
        LayerPlan(())
    with pytest.raises(TypeError, match="layer 1"):
        LayerPlan((Exact(), "exact"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="layer 0 kind"):
        LayerPlan.from_json([{"kind": "Nystrom"}])
    with pytest.raises(ValueError, match="layer 0"):
        LayerPlan.from_json([{"kind": "PnPNystra", "landmarks": 0}])


def test_plan_under_budget_takes_the_harmless_layers_first() -> None:
    drops = [0.5, 0.01, 0.2, float("inf"), 0.05]
    plan = plan_under_budget(drops, 0.3, NYS)
    assert plan.nystrom_layers == (1, 2, 4)  # 0.26 dB in all; 0.5 and inf do not fit
    assert plan.specs[0] == Exact() and plan.specs[1] == NYS
    seen: list[tuple[int, ...]] = []

    def joint(p: LayerPlan) -> float:  # losses that do not add up: 0.1 dB extra whenever layer 2 is in
        seen.append(p.nystrom_layers)
        return sum(drops[i] for i in p.nystrom_layers) + (0.1 if 2 in p.nystrom_layers else 0.0)

    assert plan_under_budget(drops, 0.3, NYS, joint=joint).nystrom_layers == (1, 4)
    assert seen == [(1, 2, 4), (1, 4)]
    assert plan_under_budget(drops, 0.0, NYS).nystrom_layers == ()
    with pytest.raises(ValueError, match="budget"):
        plan_under_budget(drops, -1.0, NYS)


@pytest.mark.skipif(not SWINIR.is_file(), reason="../shared/fixtures/parity is missing")
def test_patch_attention_gives_each_block_its_plan_spec() -> None:
    model = load_model(SWINIR)
    blocks = attention_layers(model)
    assert len(blocks) == sum(1 for m in model.modules() if type(m).__name__ == "SwinTransformerBlock")
    specs = tuple(NYS if i % 3 == 0 else Exact() for i in range(len(blocks)))
    patch_attention(model, LayerPlan(specs))
    assert tuple(b.spec for b in blocks) == specs  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=f"plan has 2 layers .* {len(blocks)} window-attention blocks"):
        patch_attention(model, LayerPlan((Exact(), NYS)))
    patch_attention(model, Exact())
    assert all(b.spec == Exact() for b in blocks)  # type: ignore[attr-defined]


def test_max_error_validation() -> None:
    for bad in (0, -0.1, float("nan"), True, "0.3"):
        with pytest.raises(ValueError, match="max_error"):
            PnPNystra(max_error=bad)  # type: ignore[arg-type]


def _sharp(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """ESWT-like q = k with large norms: attention close to the identity, which Nyström cannot represent."""
    g = torch.Generator().manual_seed(seed)
    qk = torch.randn(6, 1, 144, 30, generator=g) * 1.2
    return qk, torch.randn(6, 1, 144, 30, generator=g)


def test_max_error_falls_back_to_exact_on_sharp_attention(caplog: pytest.LogCaptureFixture) -> None:
    qk, v = _sharp()
    ref = attention(qk, qk, v, scale=1.0)
    raw = attention(qk, qk, v, scale=1.0, spec=NYS, window=(24, 6))
    assert sampled_error(raw, qk, qk, v, scale=1.0, bias=None, mask=None) > 0.5
    with caplog.at_level(logging.DEBUG, logger="vsnystra.attention.check"):
        out = attention(qk, qk, v, scale=1.0, spec=PnPNystra(16, 6, None, "matrix", max_error=0.3), window=(24, 6))
    assert torch.equal(out, ref)
    assert any("exact attention ran instead" in r.getMessage() and "24x6" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("masked", [False, True])
def test_max_error_keeps_a_good_approximation(masked: bool) -> None:
    q, k, v = window_qkv(32, 32, 16, 2, 16, shift=8 if masked else 0, seed=4)
    kw = {}
    if masked:
        kw = {"bias": relative_bias(16, 2, torch.Generator().manual_seed(5), 0.5), "mask": shift_mask(32, 32, 16, 8)}
    plain = attention(q, k, v, scale=0.25, spec=PnPNystra(32, 8, None, "matrix"), **kw)
    err = sampled_error(plain, q, k, v, scale=0.25, bias=kw.get("bias"), mask=kw.get("mask"))
    assert err < 0.3
    out = attention(q, k, v, scale=0.25, spec=PnPNystra(32, 8, None, "matrix", max_error=0.3), **kw)
    assert torch.equal(out, plain)
    exact = attention(q, k, v, scale=0.25, **kw)
    assert sampled_error(exact, q, k, v, scale=0.25, bias=kw.get("bias"), mask=kw.get("mask")) < 1e-5
