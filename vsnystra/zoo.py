"""Model names → checkpoint files, shared by the filters and the CLI.

``resolve_model`` looks in this order, so a user's explicit file always wins:
  1. an existing file path;
  2. a bundled default in the repo's ``models/`` folder, listed in ``models/zoo.json``
     (format below) or present as ``models/<name>.pth``;
  3. an official upstream checkpoint name (``vsnystra.weights.OFFICIAL``) found in the per-user weights cache.
A known official name that is not downloaded yet raises ``ModelNotFoundError`` saying how to download it.

``models/zoo.json`` (written by whoever adds bundled models)::

    {"rvrt-denoise-small": {"file": "rvrt-denoise-small.pth", "arch": "rvrt", "task": "denoise",
                            "sha256": "<64 hex or null>", "card": "rvrt-denoise-small.md",
                            "defaults": {"chunk": 4, "chunk_overlap": 2}}}

``file`` and ``card`` are relative to ``models/``. ``defaults`` (optional) maps filter keyword names to the values
the model was trained for; they apply whenever the user leaves that keyword unset.
``VSNYSTRA_MODELS_DIR`` overrides the folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vsnystra import weights

MODELS_DIR_ENV = "VSNYSTRA_MODELS_DIR"
_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors", ".bin")


class ModelNotFoundError(FileNotFoundError):
    """A model name or path that resolves to no file; the message says how to get one."""


@dataclass(frozen=True)
class BundledModel:
    """One entry of models/zoo.json."""

    name: str
    file: Path
    arch: str | None
    task: str | None
    sha256: str | None
    card: Path | None
    defaults: Mapping[str, object] = field(default_factory=dict)  # option defaults it was trained for


def default_models() -> dict[str, str]:
    """Filter name -> the bundled model it uses when none is given (the architectures' ``default_model``)."""
    from vsnystra.archs.registry import ARCHITECTURES  # imports torch: only when asked

    return {arch.filter_name: arch.default_model for arch in ARCHITECTURES}


def __getattr__(name: str) -> dict[str, str]:
    if name == "DEFAULT_MODELS":
        return default_models()
    raise AttributeError(f"module 'vsnystra.zoo' has no attribute {name!r}")


def models_dir() -> Path:
    """The bundled-models folder: $VSNYSTRA_MODELS_DIR, else ``models/`` next to the package."""
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    here = Path(__file__).resolve().parent
    for cand in (here / "models", here.parent / "models"):
        if cand.is_dir():
            return cand
    return here.parent / "models"


def bundled_models() -> dict[str, BundledModel]:
    """Bundled models from models/zoo.json plus any ``models/*.pth`` not listed there."""
    root = models_dir()
    out: dict[str, BundledModel] = {}
    index = root / "zoo.json"
    if index.is_file():
        try:
            raw = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(
                f"vsnystra.zoo: cannot read {index}: {e}; fix the JSON (format: see vsnystra/zoo.py)"
            ) from e
        if not isinstance(raw, dict):
            raise ValueError(f"vsnystra.zoo: {index} must hold an object {{name: {{file, arch, task, sha256, card}}}}")
        for name, entry in raw.items():
            if not isinstance(entry, dict) or "file" not in entry:
                raise ValueError(f"vsnystra.zoo: {index}: entry {name!r} needs at least a 'file' field")
            card = entry.get("card")
            defaults = entry.get("defaults", {})
            if not isinstance(defaults, dict):
                raise ValueError(f"vsnystra.zoo: {index}: entry {name!r}: 'defaults' must be an object of options")
            out[name] = BundledModel(
                name=name,
                file=root / str(entry["file"]),
                arch=entry.get("arch"),
                task=entry.get("task"),
                sha256=entry.get("sha256"),
                card=root / str(card) if card else None,
                defaults=defaults,
            )
    if root.is_dir():
        for p in sorted(root.glob("*.pth")):
            if p.stem not in out:
                out[p.stem] = BundledModel(p.stem, p, None, None, None, None)
    return out


def bundled_defaults(path: Path) -> Mapping[str, object]:
    """The option defaults of the bundled model stored at ``path`` (empty for any other checkpoint)."""
    target = path.resolve()
    for entry in bundled_models().values():
        if entry.defaults and entry.file.resolve() == target:
            return entry.defaults
    return {}


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
    if text in weights.OFFICIAL:
        cached = weights.cached_path(text)
        if cached.is_file():
            return cached
        w = weights.OFFICIAL[text]
        how = (
            f"download it with `vsnystra weights download {text}`"
            if w.url
            else f"{w.note} (source: {w.source}; import with `vsnystra weights import {text} FILE`)"
        )
        raise ModelNotFoundError(
            f"vsnystra.resolve_model: official checkpoint {text!r} is not in {cached.parent}; {how}"
        )
    names = sorted(set(bundled) | set(weights.OFFICIAL))
    raise ModelNotFoundError(
        f"vsnystra.resolve_model: unknown model {text!r}; pass a checkpoint path or one of: {', '.join(names)}"
    )


def available_models() -> dict[str, str]:
    """Every known name → "bundled", "downloaded" or "not downloaded" (for listings)."""
    out = {name: "bundled" for name, m in bundled_models().items() if m.file.is_file()}
    for name in weights.OFFICIAL:
        if name not in out:
            out[name] = "downloaded" if weights.cached_path(name).is_file() else "not downloaded"
    return out
