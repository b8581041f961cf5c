"""Which back-end runs a model: ``backend="torch"``, ``"openvino"`` or ``"auto"`` (the default).

"auto" runs OpenVINO where it was measured faster than vsnystra's own PyTorch path for that architecture and
attention setting on this device class, and PyTorch everywhere else. The measurements ship as package data
(``backends.json``, written by ``benchmarks/backends.py --write-table``; see benchmarks/results/backends.md), one
set of rows per device class: the CPU's vector ISA as PyTorch reports it ("cpu-avx512", "cpu-avx2", ...), because
which back-end wins depends on it. A class without rows reads the nearest measured one (the next narrower ISA, else
the next wider). auto falls back to PyTorch when openvino is not installed, on CUDA devices, in half precision, at
enlarged windows and when the model cannot be exported (the OpenVINO wrapper then runs the torch model, with one
warning). Video models run their full-length chunks through OpenVINO and every shorter chunk (a short scene or
clip) through torch, so one compiled graph serves a clip; under auto, chunks larger than
``openvino.AUTO_MAX_VIDEO_PIXELS`` also run with torch (OpenVINO's memory; :mod:`vsnystra.runtime.openvino`).
``VSNYSTRA_BACKEND`` sets the default for callers that give none.
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
# device classes from the narrowest vector ISA to the widest: the fallback order for a class without rows
CPU_CLASSES = ("cpu-default", "cpu-avx2", "cpu-avx512")


def default_backend() -> str:
    """The back-end used when the caller gives none: ``$VSNYSTRA_BACKEND`` or "auto"."""
    return (os.environ.get(BACKEND_ENV) or "auto").strip().lower()


def openvino_available() -> bool:
    """Whether the optional ``openvino`` package (``pip install vsnystra[openvino]``) can be imported."""
    return importlib.util.find_spec("openvino") is not None


@functools.cache
def device_class() -> str:
    """This CPU's class in the table: "cpu-" and the vector ISA PyTorch's kernels use ("avx2", "avx512", ...)."""
    return "cpu-" + torch.backends.cpu.get_cpu_capability().lower()


@functools.cache
def measured() -> dict[str, Any]:
    """The shipped measurements: {device class: {"arch/attention": {"torch_ms", "openvino_ms", ...}}}."""
    text = resources.files("vsnystra.runtime").joinpath(TABLE).read_text(encoding="utf-8")
    table: dict[str, Any] = json.loads(text)["devices"]
    return table


def rows_for(device: str) -> dict[str, Any]:
    """The rows of ``device``'s class, else of the nearest measured class (narrower ISAs first, then wider)."""
    table = measured()
    if device in table:
        rows: dict[str, Any] = table[device]
        return rows
    order = list(CPU_CLASSES)
    at = order.index(device) if device in order else len(order)  # outside the list: widest measured first
    for name in [*order[:at][::-1], *order[at + 1 :]]:
        if name in table:
            rows = table[name]
            return rows
    return {}


def faster_backend(arch: str, attention: str, device: str | None = None) -> str:
    """ "openvino" when the table measured it faster than torch for (arch, attention) on ``device``'s class
    (default: this CPU's)."""
    row = rows_for(device or device_class()).get(f"{arch}/{attention}")
    if not row:
        return "torch"
    return "openvino" if float(row["openvino_ms"]) < float(row["torch_ms"]) else "torch"


def auto_backend(
    arch: str, kind: str, attention: str, *, enlarged_window: bool, device: torch.device, dtype: torch.dtype
) -> str:
    """What backend="auto" runs (module docstring): "openvino" or "torch". ``kind`` ("image"/"video") is kept for
    callers; both kinds follow the table."""
    del kind
    if device.type != "cpu" or dtype != torch.float32 or enlarged_window:
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
