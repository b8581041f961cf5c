"""vsnystra: pre-trained restoration transformers (RVRT, SwinIR, Uformer) for VapourSynth and the command line,
with optional training-free PnP-Nystra attention.

The public names are resolved lazily so that ``import vsnystra`` stays cheap and has no side effects
(the VapourSynth shim imports it inside vspipe, where start-up time and stdout hygiene matter).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "attention": "vsnystra.attention",
    "Exact": "vsnystra.attention",
    "Naive": "vsnystra.attention",
    "PnPNystra": "vsnystra.attention",
    "AttentionSpec": "vsnystra.attention",
    "load_model": "vsnystra.archs.registry",
    "patch_attention": "vsnystra.archs.patch",
    "ModelInfo": "vsnystra.archs.base",
    "restore_image": "vsnystra.runtime.image",
    "restore_video": "vsnystra.runtime.video",
    "resolve_model": "vsnystra.zoo",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from vsnystra.archs.base import ModelInfo
    from vsnystra.archs.patch import patch_attention
    from vsnystra.archs.registry import load_model
    from vsnystra.attention import AttentionSpec, Exact, Naive, PnPNystra, attention
    from vsnystra.runtime.image import restore_image
    from vsnystra.runtime.video import restore_video
    from vsnystra.zoo import resolve_model


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vsnystra' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
