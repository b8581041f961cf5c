"""The model zoo: model names -> checkpoint files, shared by the filters and the CLI.

``resolve_model`` looks in this order, so a user's explicit file always wins:
  1. an existing file path;
  2. a bundled model in the ``models/`` folder, listed in ``models/zoo.json`` (:mod:`vsnystra.zoo.bundled`) or
     present as ``models/<name>.pth``;
  3. an official upstream checkpoint name (:mod:`vsnystra.zoo.official`) found in the per-user weights cache.
A known official name that is not downloaded yet raises ``ModelNotFoundError`` saying how to download it
(:mod:`vsnystra.zoo.download`).
"""

from __future__ import annotations

import os
from pathlib import Path

from vsnystra.zoo.bundled import MODELS_DIR_ENV, BundledModel, bundled_defaults, bundled_models, models_dir
from vsnystra.zoo.download import ChecksumError, DownloadError, Progress, download, import_file, sha256_file
from vsnystra.zoo.official import (
    BASE_URL_ENV,
    OFFICIAL,
    WEIGHTS_DIR_ENV,
    OfficialWeights,
    cached_path,
    official,
    weights_dir,
)

__all__ = [
    "BASE_URL_ENV",
    "MODELS_DIR_ENV",
    "OFFICIAL",
    "WEIGHTS_DIR_ENV",
    "BundledModel",
    "ChecksumError",
    "DownloadError",
    "ModelNotFoundError",
    "OfficialWeights",
    "Progress",
    "available_models",
    "bundled_defaults",
    "bundled_models",
    "cached_path",
    "default_models",
    "download",
    "import_file",
    "models_dir",
    "official",
    "resolve_model",
    "sha256_file",
    "weights_dir",
]

_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors", ".bin")


class ModelNotFoundError(FileNotFoundError):
    """A model name or path that resolves to no file; the message says how to get one."""


def default_models() -> dict[str, str]:
    """Filter name -> the bundled model it uses when none is given (the architectures' ``default_model``)."""
    from vsnystra.archs.registry import ARCHITECTURES  # imports torch: only when asked

    return {arch.filter_name: arch.default_model for arch in ARCHITECTURES}


def __getattr__(name: str) -> dict[str, str]:
    if name == "DEFAULT_MODELS":
        return default_models()
    raise AttributeError(f"module 'vsnystra.zoo' has no attribute {name!r}")


def _looks_like_path(s: str) -> bool:
    return os.sep in s or "/" in s or s.startswith((".", "~")) or s.lower().endswith(_CHECKPOINT_SUFFIXES)


def resolve_model(name_or_path: str | os.PathLike[str]) -> Path:
    """Return the checkpoint file for a path, a bundled default name, or a downloaded official name."""
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        return path.resolve()
    if not isinstance(name_or_path, str) or _looks_like_path(text):
        raise ModelNotFoundError(
            f"vsnystra.resolve_model: checkpoint file {text!r} does not exist; "
            "pass an existing .pth path or a model name (`vsnystra weights list`)"
        )
    bundled = bundled_models()
    if text in bundled:
        entry = bundled[text]
        if entry.file.is_file():
            return entry.file
        raise ModelNotFoundError(
            f"vsnystra.resolve_model: bundled model {text!r} is listed but {entry.file} is missing; "
            "reinstall vsnystra or pass a checkpoint path"
        )
    if text in OFFICIAL:
        cached = cached_path(text)
        if cached.is_file():
            return cached
        w = OFFICIAL[text]
        how = (
            f"download it with `vsnystra weights download {text}`"
            if w.url
            else f"{w.note} (source: {w.source}; import with `vsnystra weights import {text} FILE`)"
        )
        raise ModelNotFoundError(
            f"vsnystra.resolve_model: official checkpoint {text!r} is not in {cached.parent}; {how}"
        )
    names = sorted(set(bundled) | set(OFFICIAL))
    raise ModelNotFoundError(
        f"vsnystra.resolve_model: unknown model {text!r}; pass a checkpoint path or one of: {', '.join(names)}"
    )


def available_models() -> dict[str, str]:
    """Every known name → "bundled", "downloaded" or "not downloaded" (for listings)."""
    out = {name: "bundled" for name, m in bundled_models().items() if m.file.is_file()}
    for name in OFFICIAL:
        if name not in out:
            out[name] = "downloaded" if cached_path(name).is_file() else "not downloaded"
    return out
