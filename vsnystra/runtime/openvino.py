"""The OpenVINO back-end: the model exported per input shape (``runtime/export.py``) and compiled for the CPU.

Why: OpenVINO's CPU plugin runs our exported graphs faster than eager PyTorch on some models (see
benchmarks/results/export.md). Compiled models are cached per input shape and dtype inside one wrapper per loaded
model, so a clip whose frames (or tiles) share one shape compiles once. The wrapper is an ``nn.Module`` holding the
torch model, so ``restore_image`` pads, tiles and crops exactly as for the torch back-end.
"""

from __future__ import annotations

import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vsnystra.archs.base import RestorationModel, SizeRule
from vsnystra.lru import LRU
from vsnystra.runtime.export import check_exportable, write_onnx

BACKEND_CHOICES = ("torch", "openvino")
_MAX_SHAPES = 8


def openvino_available() -> bool:
    """Whether the optional ``openvino`` package (``pip install vsnystra[openvino]``) imports."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


class OpenVINOModel(RestorationModel):
    """Runs ``model`` through OpenVINO on the CPU, one compiled model per (shape, dtype) of its input."""

    def __init__(self, model: RestorationModel, threads: int | None = None) -> None:
        super().__init__()
        check_exportable(model, "openvino")
        self.torch_model = model
        self.info = model.info
        self.threads = threads
        self._compiled: LRU[tuple[object, ...], Any] = LRU(_MAX_SHAPES)
        self.compiles = 0

    def size_rule(self) -> SizeRule:
        return self.torch_model.size_rule()

    def compiled(self, x: torch.Tensor) -> Any:
        """The compiled model for ``x``'s shape and dtype (exported and compiled on first use)."""
        key = (tuple(x.shape), x.dtype, self.threads or torch.get_num_threads())
        return self._compiled.get_or_create(key, lambda: self._compile(x, key[2]))

    def _compile(self, x: torch.Tensor, threads: object) -> Any:
        import openvino as ov

        with tempfile.TemporaryDirectory(prefix="vsnystra-ov-") as tmp:
            onnx = Path(tmp) / "model.onnx"  # through ONNX: OpenVINO's torch.export front end lacks some aten ops
            write_onnx(self.torch_model, torch.zeros_like(x, device="cpu"), onnx)
            converted = ov.Core().read_model(str(onnx))
        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
        if x.dtype == torch.bfloat16:
            config["INFERENCE_PRECISION_HINT"] = "bf16"
        self.compiles += 1
        return ov.Core().compile_model(converted, "CPU", config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise ValueError(f"openvino: runs on the CPU, got an input on {x.device}; use device='cpu' tensors")
        compiled = self.compiled(x)
        result = compiled(x.detach().float().contiguous().numpy())[0]
        return torch.from_numpy(result).to(x.dtype)


_WRAPPED: weakref.WeakKeyDictionary[nn.Module, OpenVINOModel] = weakref.WeakKeyDictionary()
_WRAPPED_LOCK = threading.Lock()


def with_backend(model: nn.Module, backend: str) -> nn.Module:
    """``model`` for ``backend``: itself for "torch", its (shared, compile-caching) OpenVINO wrapper for "openvino"."""
    if backend == "torch":
        return model
    if backend != "openvino":
        raise ValueError(f"backend must be one of {', '.join(BACKEND_CHOICES)}, got {backend!r}")
    if not isinstance(model, RestorationModel):
        raise TypeError(f"openvino: expected a model loaded with vsnystra.load_model, got {type(model).__name__}")
    with _WRAPPED_LOCK:
        wrapped = _WRAPPED.get(model)
        if wrapped is None:
            wrapped = OpenVINOModel(model)
            _WRAPPED[model] = wrapped
        return wrapped
