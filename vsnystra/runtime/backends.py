"""Which back-end runs a model: ``backend="torch"``, ``"openvino"`` or ``"auto"`` (the default).

"auto" runs OpenVINO where it was measured faster than vsnystra's own PyTorch path for that architecture and
attention setting on this device class, and PyTorch everywhere else. The measurements ship as package data
(``backends.json``, written by ``benchmarks/backends.py --write-table``; see benchmarks/results/backends.md). auto
falls back to PyTorch when openvino is not installed, on CUDA devices, in half precision, at enlarged windows, for
video models and when the model cannot be exported (the OpenVINO wrapper then runs the torch model, with one
warning). Video models stay on torch although OpenVINO measured faster on a 4-frame clip: the traced RVRT unrolls
its recurrence over the chunk, so exporting a 16-frame chunk takes many minutes per shape, and the OpenVINO wrapper
does not run the video runtime's chunks yet. ``VSNYSTRA_BACKEND`` sets the default for callers that give none.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch

BACKEND_CHOICES = ("auto", "torch", "openvino")
BACKEND_ENV = "VSNYSTRA_BACKEND"
CACHE_DIR_ENV = "VSNYSTRA_OPENVINO_CACHE"
TABLE = "backends.json"


def default_backend() -> str:
    """The back-end used when the caller gives none: ``$VSNYSTRA_BACKEND`` or "auto"."""
    return (os.environ.get(BACKEND_ENV) or "auto").strip().lower()


def openvino_available() -> bool:
    """Whether the optional ``openvino`` package (``pip install vsnystra[openvino]``) can be imported."""
    return importlib.util.find_spec("openvino") is not None


@functools.cache
def measured() -> dict[str, Any]:
    """The shipped measurements: {device class: {"arch/attention": {"torch_ms", "openvino_ms", ...}}}."""
    text = resources.files("vsnystra.runtime").joinpath(TABLE).read_text(encoding="utf-8")
    table: dict[str, Any] = json.loads(text)["devices"]
    return table


def faster_backend(arch: str, attention: str, device_class: str = "cpu") -> str:
    """ "openvino" when the table measured it faster than torch for (arch, attention) on ``device_class``."""
    row = measured().get(device_class, {}).get(f"{arch}/{attention}")
    if not row:
        return "torch"
    return "openvino" if float(row["openvino_ms"]) < float(row["torch_ms"]) else "torch"


def auto_backend(
    arch: str, kind: str, attention: str, *, enlarged_window: bool, device: torch.device, dtype: torch.dtype
) -> str:
    """What backend="auto" runs (module docstring): "openvino" or "torch"."""
    if device.type != "cpu" or dtype != torch.float32 or enlarged_window or kind != "image":
        return "torch"
    if not openvino_available():
        return "torch"
    return faster_backend(arch, attention)


def cache_dir() -> Path:
    """Where compiled OpenVINO models are kept across runs: ``$VSNYSTRA_OPENVINO_CACHE`` or the user cache."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_path("vsnystra")) / "openvino"
