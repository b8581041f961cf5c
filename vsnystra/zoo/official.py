"""Official upstream checkpoints: the catalogue (``official.json``, data shipped with the package) and the cache.

Why a catalogue of our own: the filters and the CLI accept short names ("rvrt-denoise-davis") and the download must
know where each file lives, its upstream file name, and what to check after the transfer.

Environment overrides (tests point them at a temporary folder and a loopback server):
    VSNYSTRA_WEIGHTS_DIR        cache folder (default: platformdirs user_cache_path("vsnystra")/weights)
    VSNYSTRA_WEIGHTS_BASE_URL   replaces the release folder: URL = BASE_URL + "/" + file name
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

WEIGHTS_DIR_ENV = "VSNYSTRA_WEIGHTS_DIR"
BASE_URL_ENV = "VSNYSTRA_WEIGHTS_BASE_URL"
CATALOGUE = "official.json"


@dataclass(frozen=True)
class OfficialWeights:
    """One published checkpoint. ``release`` (the folder URL) is None where no stable direct URL exists."""

    name: str
    arch: str  # an Architecture's name
    task: str
    file: str
    release: str | None
    licence: str
    approx_mb: float
    sha256: str | None = None
    size: int | None = None  # exact byte size, where published
    note: str = ""
    manual_source: str = ""  # where to fetch it by hand when there is no release URL

    @property
    def url(self) -> str | None:
        """Download URL, honouring VSNYSTRA_WEIGHTS_BASE_URL; None when the file must be fetched by hand."""
        base = os.environ.get(BASE_URL_ENV)
        if self.release is None:
            return None
        return f"{(base or self.release).rstrip('/')}/{self.file}"

    @property
    def source(self) -> str:
        return self.release or self.manual_source


def _entry(raw: dict[str, Any], releases: dict[str, str]) -> OfficialWeights:
    release = raw.get("release")
    return OfficialWeights(
        name=str(raw["name"]),
        arch=str(raw["arch"]),
        task=str(raw["task"]),
        file=str(raw["file"]),
        release=None if release is None else releases[str(release)],
        licence=str(raw["licence"]),
        approx_mb=float(raw["approx_mb"]),
        sha256=raw.get("sha256"),
        size=raw.get("size"),
        note=str(raw.get("note", "")),
        manual_source=str(raw.get("source", "")),
    )


def load_catalogue() -> dict[str, OfficialWeights]:
    """The catalogue shipped as package data, by name."""
    data = json.loads(resources.files(__package__ or "vsnystra.zoo").joinpath(CATALOGUE).read_text(encoding="utf-8"))
    entries = [_entry(raw, data["releases"]) for raw in data["checkpoints"]]
    return {w.name: w for w in entries}


OFFICIAL: dict[str, OfficialWeights] = load_catalogue()


def weights_dir() -> Path:
    """The per-user folder holding downloaded official checkpoints (not created here)."""
    env = os.environ.get(WEIGHTS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_path("vsnystra")) / "weights"


def cached_path(name: str) -> Path:
    """Where the official checkpoint ``name`` lives once downloaded (it may not exist)."""
    return weights_dir() / official(name).file


def official(name: str) -> OfficialWeights:
    """Catalogue entry for ``name``; the error lists the known names."""
    try:
        return OFFICIAL[name]
    except KeyError:
        known = ", ".join(sorted(OFFICIAL))
        raise KeyError(f"vsnystra.zoo: unknown official checkpoint {name!r}; known names: {known}") from None
