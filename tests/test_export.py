"""Export: torch.export and ONNX of tiny SwinIR/Uformer match eager; traces never touch the eager caches."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_swinir, tiny_uformer

from vsnystra.archs.common import shift_mask
from vsnystra.archs.patch import patch_attention
from vsnystra.attention import attention
from vsnystra.attention.nystra import nystra_attention
from vsnystra.attention.specs import Exact, PnPNystra
from vsnystra.attention.tracing import with_real_twin
from vsnystra.runtime.export import ExportError, example_input, export_onnx, export_program


@pytest.mark.parametrize("build", [tiny_swinir, tiny_uformer])
def test_exported_program_matches_eager_and_leaves_eager_bit_identical(build) -> None:  # type: ignore[no-untyped-def]
    model = build()
    x = example_input(model, (128, 128) if build is tiny_uformer else (32, 32))
    with torch.no_grad():
        before = model(x)
    program = export_program(model, x)
    with torch.no_grad():
        traced = program.module()(x)
        after = model(x)
    assert torch.equal(before, after)
    assert (traced - before).abs().max().item() < 1e-5


def test_failed_trace_leaves_eager_bit_identical() -> None:
    model = tiny_swinir()
    patch_attention(model, PnPNystra(landmarks=4, iters=3, policy="always", max_error=0.5))  # checks values per call
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        before = model(x)
    with pytest.raises(ExportError, match="max_error=None"):
        export_program(model, x)
    with pytest.raises(Exception, match="cannot be exported"):
        torch.export.export(model, (x,), strict=False)  # straight torch.export: refused before any cache write
    with torch.no_grad():
        after = model(x)
    assert torch.equal(before, after)
    patch_attention(model, Exact())
    with torch.no_grad():
        exact = model(x)
    program = export_program(model, x)
    with torch.no_grad():
        assert torch.equal(model(x), exact)
        assert (program.module()(x) - exact).abs().max().item() < 1e-5


def test_export_size_must_fit_the_size_rule() -> None:
    with pytest.raises(ExportError, match="multiples of 128"):
        example_input(tiny_uformer(), (128, 96))


@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnxscript") is None,
    reason="needs the export extra (onnx, onnxscript, onnxruntime)",
)
def test_onnx_matches_eager(tmp_path: Path) -> None:
    diffs = export_onnx(tiny_swinir(), tmp_path / "swinir.onnx", (16, 24))
    assert (tmp_path / "swinir.onnx").stat().st_size > 0
    assert diffs["onnxruntime"] < 1e-5
    assert all(d < 1e-5 for d in diffs.values())


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None, reason="needs the export extra")
def test_cli_export_writes_onnx(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from vsnystra.cli.main import main

    ckpt = tmp_path / "tiny.pth"
    torch.save({"params": tiny_swinir().state_dict()}, ckpt)
    out = tmp_path / "tiny.onnx"
    caplog.set_level("INFO")
    assert main(["export", str(ckpt), "-o", str(out), "--size", "16x24"]) == 0
    assert out.stat().st_size > 0
    assert "max |onnx - eager|" in caplog.text
    assert main(["export", str(ckpt), "-o", str(out), "--size", "15x16"]) == 2


@pytest.mark.parametrize(("build", "side"), [(tiny_swinir, 32), (tiny_uformer, 128)])
def test_pnp_nystra_models_export_and_match_eager(build, side: int) -> None:  # type: ignore[no-untyped-def]
    model = build()
    patch_attention(model, PnPNystra(landmarks=4, iters=3, policy="always"))
    x = example_input(model, (side, side))
    with torch.no_grad():
        before = model(x)
    program = export_program(model, x)
    with torch.no_grad():
        assert torch.equal(model(x), before)
        assert (program.module()(x) - before).abs().max().item() < 1e-5


class MaskedNystra(torch.nn.Module):
    """The seam with a bias and a shift mask built as the architectures build it (real values attached in a trace)."""

    def __init__(self, guard: bool = False) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.randn(2, 16, 16))
        self.spec = PnPNystra(landmarks=4, iters=6, policy="always", guard=guard)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        mask = with_real_twin(
            shift_mask(8, 8, (4, 4), (2, 2), device=q.device, dtype=q.dtype),
            lambda: shift_mask(8, 8, (4, 4), (2, 2), device=q.device, dtype=q.dtype),
        )
        return attention(q, k, v, scale=0.5, bias=self.bias, mask=mask, spec=self.spec, window=(4, 4))


def test_traced_nystra_equals_eager_nystra_with_bias_and_mask() -> None:
    torch.manual_seed(5)
    module = MaskedNystra()
    q, k, v = (torch.randn(8, 2, 16, 8) for _ in range(3))  # 2 images x 4 windows, sharp enough to differ from exact
    with torch.no_grad():
        mask = shift_mask(8, 8, (4, 4), (2, 2), device=q.device, dtype=q.dtype)
        eager = nystra_attention(q, k, v, scale=0.5, bias=module.bias, mask=mask, spec=module.spec, window=(4, 4))
        exact = attention(q, k, v, scale=0.5, bias=module.bias, mask=mask)
        program = torch.export.export(module, (q, k, v), strict=False)
        traced = program.module()(q, k, v)
    assert (eager - exact).abs().max().item() > 1e-2  # the approximation is really in use
    assert (traced - eager).abs().max().item() < 1e-5


def test_traced_guard_takes_the_exact_rows_where_eager_recomputes_them() -> None:
    torch.manual_seed(6)
    guarded, plain = MaskedNystra(guard=True), MaskedNystra(guard=False)
    plain.bias = guarded.bias
    q, k, v = (torch.randn(8, 2, 16, 8) * s for s in (8.0, 8.0, 1.0))  # sharp logits: Nyström breaks down in rows
    with torch.no_grad():
        eager, unguarded = guarded(q, k, v), plain(q, k, v)
        traced = torch.export.export(guarded, (q, k, v), strict=False).module()(q, k, v)
    assert torch.isfinite(eager).all() and not torch.allclose(eager, unguarded, atol=1e-2)  # the guard fired
    assert (traced - eager).abs().max().item() < 1e-4  # logits up to ~64: exact rows round differently (SDPA)
