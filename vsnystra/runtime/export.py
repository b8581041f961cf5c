"""Export a loaded model for one fixed input shape: torch.export programs and ONNX files.

Why fixed shapes: window masks, token orders and gathered biases are functions of the input size; the traced path
(``vsnystra.attention.tracing``) builds them in the graph from that size, so one export serves every tile of that
shape (the tiled runtimes keep tiles the same shape). The exported graph takes the model's input as the model sees
it, after test-time padding (``restore_image`` pads as the size rule says, then calls the model).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from vsnystra.archs.base import model_info
from vsnystra.attention.specs import Exact, Naive

log = logging.getLogger(__name__)


class ExportError(ValueError):
    """An export the model or the options cannot support; the message names the fix."""


def check_exportable(model: nn.Module, caller: str = "export") -> None:
    """Raise ExportError unless every window attention of ``model`` is exact (PnP-Nystra picks kernels by data)."""
    info = model_info(model, caller)
    if info.kind != "image":
        raise ExportError(f"{caller}: {info.arch} ({info.kind} model) cannot be exported yet; export SwinIR or Uformer")
    for module in model.modules():
        spec = getattr(module, "spec", None)
        if spec is not None and not isinstance(spec, (Exact, Naive)):
            raise ExportError(
                f"{caller}: {info.arch} uses {type(spec).__name__} attention, which cannot be exported yet; "
                'use attention="exact"'
            )


def example_input(model: nn.Module, size: Sequence[int], batch: int = 1) -> torch.Tensor:
    """A random (batch, C, H, W) input of the model's dtype and device at ``size`` = (H, W), checked against its
    size rule (the model sees padded inputs)."""
    info = model_info(model, "export")
    h, w = (int(s) for s in size)
    m = info.size_rule.multiple_of
    if h < 1 or w < 1 or h % m or w % m:
        raise ExportError(
            f"export: size {h}x{w} must be positive multiples of {m} for this {info.arch} model "
            "(the model's padded input); round up to a multiple"
        )
    param = next(model.parameters())
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, info.in_channels, h, w, generator=gen)
    return x.to(device=param.device, dtype=param.dtype)


def export_program(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """torch.export of ``model`` at ``example``'s shape (non-strict: the Python around the graph runs as usual)."""
    check_exportable(model)
    with torch.no_grad():
        return torch.export.export(model, (example,), strict=False)


def write_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, *, opset: int = 18) -> None:
    """Write ``model`` at ``example``'s shape as one self-contained ONNX file (weights inside)."""
    program = export_program(model, example)
    onnx_program = torch.onnx.export(
        program, (example,), dynamo=True, opset_version=opset, input_names=["input"], verbose=False
    )
    if onnx_program is None:
        raise ExportError(f"export: torch.onnx.export returned no program for {path}")
    onnx_program.save(str(path), external_data=False)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    size: Sequence[int],
    *,
    opset: int = 18,
) -> float:
    """Write ``model`` as ONNX for input (1, C, H, W) at ``size`` = (H, W); returns the largest difference from the
    eager model on a random input, computed with onnxruntime (NaN when onnxruntime is not installed)."""
    example = example_input(model, size)
    out = Path(path)
    write_onnx(model, example, out, opset=opset)
    with torch.no_grad():
        ref = model(example).float()
    try:
        import onnxruntime as ort
    except ImportError:
        log.warning("export: onnxruntime is not installed; wrote %s unchecked", out)
        return float("nan")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])
    result = session.run(None, {session.get_inputs()[0].name: example.float().cpu().numpy()})[0]
    return float((torch.from_numpy(result) - ref.cpu()).abs().max())
