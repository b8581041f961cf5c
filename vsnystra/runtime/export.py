"""Export a loaded model for one fixed input shape: torch.export programs and ONNX files.

Image models take (1, C, H, W); RVRT takes a clip (1, T, C, H, W), T a multiple of its clip size. A non-blind RVRT
denoiser takes the sigma/255 map as a 4th channel, or 3 channels when ``sigma`` is baked in (:class:`FixedSigma`).

Why fixed shapes: window masks, token orders and gathered biases are functions of the input size; the traced path
(``vsnystra.attention.tracing``) builds them in the graph from that size, so one export serves every tile of that
shape (the tiled runtimes keep tiles the same shape). The exported graph takes the model's input as the model sees
it, after test-time padding (``restore_image`` pads as the size rule says, then calls the model).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from vsnystra.archs.base import ModelInfo, model_info
from vsnystra.attention.specs import PnPNystra

log = logging.getLogger(__name__)


class ExportError(ValueError):
    """An export the model or the options cannot support; the message names the fix."""


class FixedSigma(nn.Module):
    """A non-blind RVRT denoiser with its noise level baked in: takes (n, t, 3, h, w) and appends sigma/255."""

    def __init__(self, model: nn.Module, sigma: float) -> None:
        super().__init__()
        self.model = model
        self.level = float(sigma) / 255.0
        self.info: ModelInfo = model_info(model, "export")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.cat([x, torch.full_like(x[:, :, :1], self.level)], dim=2))


def _info(model: nn.Module, caller: str) -> ModelInfo:
    return model.info if isinstance(model, FixedSigma) else model_info(model, caller)


def check_exportable(model: nn.Module, caller: str = "export") -> None:
    """Raise ExportError for attention a fixed graph cannot hold: PnP-Nystra's per-call error check (max_error)."""
    _info(model, caller)
    for module in model.modules():
        spec = getattr(module, "spec", None)
        if isinstance(spec, PnPNystra) and spec.max_error is not None:
            raise ExportError(
                f"{caller}: PnPNystra(max_error={spec.max_error}) checks each call's values and cannot be exported; "
                "patch the model with max_error=None"
            )


def for_export(model: nn.Module, sigma: float | None) -> nn.Module:
    """``model`` as exported: wrapped in :class:`FixedSigma` when ``sigma`` is given (non-blind RVRT only)."""
    info = model_info(model, "export")
    if sigma is None:
        return model
    if not info.needs_sigma:
        raise ExportError(f"export: sigma is only for non-blind denoisers, not {info.arch} {info.variant}; drop it")
    return FixedSigma(model, sigma)


def example_input(model: nn.Module, size: Sequence[int], batch: int = 1, *, frames: int | None = None) -> torch.Tensor:
    """A random input of the model's dtype and device at ``size`` = (H, W), checked against its size rule (the model
    sees padded inputs): (batch, C, H, W) for image models, (batch, frames, C, H, W) for video models, where C
    includes the sigma map of a non-blind denoiser unless it is wrapped in :class:`FixedSigma`."""
    info = _info(model, "export")
    h, w = (int(s) for s in size)
    rule = info.size_rule
    m = rule.multiple_of
    if h < rule.min_side or w < rule.min_side or h % m or w % m:
        raise ExportError(
            f"export: size {h}x{w} must be multiples of {m} and at least {rule.min_side} for this {info.arch} model "
            "(the model's padded input); round up to a multiple"
        )
    gen = torch.Generator().manual_seed(0)
    if info.kind == "video":
        clip = info.hyperparameters.get("clip_size", 2)
        assert isinstance(clip, int)
        t = 2 * clip if frames is None else int(frames)
        if t < clip or t % clip:
            raise ExportError(f"export: --frames {t} must be a positive multiple of {info.arch}'s clip size {clip}")
        channels = info.in_channels + int(info.needs_sigma and not isinstance(model, FixedSigma))
        x = torch.rand(batch, t, channels, h, w, generator=gen)
    elif frames is not None:
        raise ExportError(f"export: --frames is for video models; {info.arch} restores single images, drop it")
    else:
        x = torch.rand(batch, info.in_channels, h, w, generator=gen)
    param = next(model.parameters())
    return x.to(device=param.device, dtype=param.dtype)


def export_program(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """torch.export of ``model`` at ``example``'s shape (non-strict: the Python around the graph runs as usual)."""
    check_exportable(model)
    with torch.no_grad():
        return torch.export.export(model, (example,), strict=False)


def write_onnx(
    model: nn.Module, example: torch.Tensor, path: str | Path, *, opset: int = 18, optimize: bool = True
) -> None:
    """Write ``model`` at ``example``'s shape as one self-contained ONNX file (weights inside)."""
    program_to_onnx(export_program(model, example), example, path, opset=opset, optimize=optimize)


def program_to_onnx(
    program: torch.export.ExportedProgram,
    example: torch.Tensor,
    path: str | Path,
    *,
    opset: int = 18,
    optimize: bool = True,
) -> None:
    """Write an exported program (:func:`export_program`) as one self-contained ONNX file. ``optimize``: run
    onnxscript's graph rewriter (a smaller file for any runtime; about half the conversion time of a large graph)."""
    onnx_program = torch.onnx.export(
        program, (example,), dynamo=True, opset_version=opset, input_names=["input"], verbose=False, optimize=optimize
    )
    if onnx_program is None:
        raise ExportError(f"export: torch.onnx.export returned no program for {path}")
    onnx_program.save(str(path), external_data=False)


def runtime_differences(path: str | Path, example: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Largest |runtime - ref| of the ONNX file at ``path`` on ``example``, per installed runtime (onnxruntime,
    OpenVINO on the CPU in fp32), one thread each."""
    feed = example.detach().float().cpu().numpy()
    ref = ref.detach().float().cpu()
    diffs: dict[str, float] = {}
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        result = session.run(None, {session.get_inputs()[0].name: feed})[0]
        diffs["onnxruntime"] = float((torch.from_numpy(result) - ref).abs().max())
    if importlib.util.find_spec("openvino") is not None:
        import openvino as ov

        config = {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32"}
        compiled = ov.Core().compile_model(str(path), "CPU", config)
        diffs["openvino"] = float((torch.from_numpy(compiled(feed)[0]) - ref).abs().max())
    return diffs


def export_onnx(
    model: nn.Module,
    path: str | Path,
    size: Sequence[int],
    *,
    frames: int | None = None,
    sigma: float | None = None,
    opset: int = 18,
) -> dict[str, float]:
    """Write ``model`` as ONNX for one input at ``size`` = (H, W) (and ``frames`` for video models, ``sigma`` baked
    into a non-blind denoiser); returns the largest difference from the eager model on a random input per
    installed runtime (empty when neither onnxruntime nor OpenVINO is installed: the file is then unchecked)."""
    net = for_export(model, sigma)
    example = example_input(net, size, frames=frames)
    out = Path(path)
    write_onnx(net, example, out, opset=opset)
    with torch.no_grad():
        ref = net(example)
    diffs = runtime_differences(out, example, ref)
    if not diffs:
        log.warning("export: neither onnxruntime nor openvino is installed; wrote %s unchecked", out)
    return diffs
