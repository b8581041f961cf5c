"""Bundled models: the ``models/`` folder and its index ``models/zoo.json``.

``models/zoo.json`` (written by ``python -m vsnystra.training.publish``)::

    {"rvrt-denoise-small": {"file": "rvrt-denoise-small.pth", "arch": "rvrt", "task": "denoise",
                            "sha256": "<64 hex or null>", "card": "rvrt-denoise-small.md",
                            "defaults": {"chunk": 4, "chunk_overlap": 2}}}

``file`` and ``card`` are relative to ``models/``. ``defaults`` (optional) maps filter keyword names to the values
the model was trained for; the settings resolver applies them whenever the user leaves that keyword unset.
``VSNYSTRA_MODELS_DIR`` overrides the folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

MODELS_DIR_ENV = "VSNYSTRA_MODELS_DIR"


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


def models_dir() -> Path:
    """The bundled-models folder: $VSNYSTRA_MODELS_DIR, else ``models/`` next to the package."""
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    package = Path(__file__).resolve().parents[1]  # vsnystra/
    for cand in (package / "models", package.parent / "models"):
        if cand.is_dir():
            return cand
    return package.parent / "models"


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
                f"vsnystra.zoo: cannot read {index}: {e}; fix the JSON (format: see vsnystra/zoo/bundled.py)"
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
