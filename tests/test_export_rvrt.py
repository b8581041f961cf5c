"""RVRT export: the traced formulations equal the eager ones; a tiny RVRT exports, runs in onnxruntime and OpenVINO
within 1e-4 of eager, and a trace leaves the eager caches usable."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_rvrt_denoiser

from vsnystra.archs.base import AttentionConfig
from vsnystra.archs.rvrt_blocks import _shift_mask_cpu, _shift_mask_graph, _token_order_cpu, _token_order_graph
from vsnystra.archs.rvrt_gda import deform_attn
from vsnystra.archs.rvrt_gda_traced import deform_attn_gathers
from vsnystra.attention.specs import AttentionSpec, Exact, PnPNystra
from vsnystra.runtime.export import (
    ExportError,
    example_input,
    export_program,
    for_export,
    program_to_onnx,
    runtime_differences,
)


@pytest.mark.parametrize(("groups", "heads"), [(4, 4), (3, 3), (4, 2)])
def test_gathers_equal_the_inference_formulations(groups: int, heads: int) -> None:
    torch.manual_seed(0)
    b, clip, cq, h, w = 2, 2, 24, 7, 9
    q, kv = torch.randn(b * clip, cq, h, w), torch.randn(b, clip, 2 * cq, h, w)
    offset = torch.randn(b * clip, clip * groups * 9 * 2, h, w) * 4  # many taps fall outside the frame
    ref = deform_attn(q, kv, offset, heads=heads, groups=groups, clip=clip)
    got = deform_attn_gathers(q, kv, offset, heads=heads, groups=groups, clip=clip)
    assert (got - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize(
    ("dp", "hp", "wp", "ws", "ss"),
    [(2, 16, 24, (2, 8, 8), (1, 4, 4)), (1, 40, 40, (1, 8, 8), (0, 4, 4)), (2, 8, 16, (2, 8, 8), (1, 0, 4))],
)
def test_graph_masks_and_orders_equal_the_cached_ones(dp: int, hp: int, wp: int, ws: tuple, ss: tuple) -> None:  # type: ignore[type-arg]
    cpu = torch.device("cpu")
    assert torch.equal(_shift_mask_graph(dp, hp, wp, ws, ss, cpu), _shift_mask_cpu(dp, hp, wp, ws, ss))
    orders = zip(_token_order_graph(2, dp, hp, wp, ws, ss, cpu), _token_order_cpu(2, dp, hp, wp, ws, ss), strict=True)
    for got, ref in orders:
        assert torch.equal(got, ref)


def test_export_arguments_are_checked() -> None:
    model = tiny_rvrt_denoiser()
    with pytest.raises(ExportError, match="multiple of"):
        example_input(model, (136, 136), frames=3)
    with pytest.raises(ExportError, match="at least 129"):
        example_input(model, (128, 128), frames=4)
    assert example_input(model, (136, 136), frames=4).shape == (1, 4, 4, 136, 136)  # sigma map as 4th channel
    assert example_input(for_export(model, 20.0), (136, 136), frames=4).shape == (1, 4, 3, 136, 136)


class AlignThenAttend(torch.nn.Module):
    """One alignment step and one shifted 3-D window layer: RVRT's two traced-only paths in a graph small enough
    to convert to ONNX in seconds (the whole recurrence unrolls to ~4000 nodes and a minute of conversion)."""

    def __init__(self, spec: AttentionSpec) -> None:
        super().__init__()
        from vsnystra.archs.rvrt_blocks import STL
        from vsnystra.archs.rvrt_gda import GuidedDeformAttnPack

        torch.manual_seed(4)
        self.align = GuidedDeformAttnPack(8, groups=4, heads=4, max_residue_magnitude=3.0)
        self.stl = STL(8, 2, (2, 4, 4), (1, 2, 2), 2.0, True)
        self.stl.configure_attention(AttentionConfig(spec=spec))
        for p in self.parameters():
            p.data.normal_(0, 0.2)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        flows = [q[:, :, :2] * 3, q[:, :, 2:4] * -2]
        y, _, _ = self.align(q, q.flip(1), q, [q, q * 0.5], flows, False)
        return self.stl(y.permute(0, 1, 3, 4, 2))


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None, reason="needs the export extra")
@pytest.mark.parametrize("spec", [Exact(), PnPNystra(landmarks=8, iters=6, policy="always")])
def test_alignment_and_shifted_windows_run_in_onnxruntime_and_openvino(tmp_path: Path, spec: AttentionSpec) -> None:
    module = AlignThenAttend(spec).eval()
    x = torch.rand(1, 2, 8, 12, 10)
    with torch.no_grad():
        ref = module(x)
        program = torch.export.export(module, (x,), strict=False)
        assert (program.module()(x) - ref).abs().max().item() < 1e-5
    program_to_onnx(program, x, tmp_path / "align.onnx")
    diffs = runtime_differences(tmp_path / "align.onnx", x, ref)
    assert set(diffs) == {r for r in ("onnxruntime", "openvino") if importlib.util.find_spec(r) is not None}
    assert all(d < 1e-4 for d in diffs.values()), diffs


@pytest.mark.slow
def test_tiny_rvrt_export_matches_eager_and_leaves_the_caches_clean() -> None:
    model = tiny_rvrt_denoiser()
    net = for_export(model, 20.0)
    x = example_input(net, (136, 136), frames=4)
    program = export_program(net, x)  # traced before any eager run at this shape: the caches must stay clean
    with torch.no_grad():
        ref = net(x)
        again = net(x)
        traced = program.module()(x)
    assert torch.equal(ref, again)
    assert (traced - ref).abs().max().item() < 1e-5


def test_cli_refuses_video_options_for_image_models(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from tiny_models import tiny_swinir

    from vsnystra.cli.main import main

    ckpt = tmp_path / "tiny.pth"
    torch.save({"params": tiny_swinir().state_dict()}, ckpt)
    out = tmp_path / "tiny.onnx"
    assert main(["export", str(ckpt), "-o", str(out), "--size", "16x24", "--frames", "4"]) == 2
    assert "--frames is for video models" in caplog.text
    assert main(["export", str(ckpt), "-o", str(out), "--size", "16x24", "--sigma", "20"]) == 2
    assert "sigma is only for non-blind denoisers" in caplog.text
    assert not out.exists()
