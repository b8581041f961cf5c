"""The architectures vsnystra knows, in detection order, and load_model on top of them.

Adding an architecture: one module under archs/ ending in ``ARCHITECTURE = Architecture(...)``, and one line here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from vsnystra.archs import rvrt, swinir, uformer
from vsnystra.archs.base import RestorationModel, StateDict
from vsnystra.archs.descriptor import Architecture
from vsnystra.archs.loading import canonical_state_dict, list_keys, read_checkpoint

log = logging.getLogger(__name__)

# Order matters where detectors could overlap (most specific first).
ARCHITECTURES: tuple[Architecture, ...] = (
    swinir.ARCHITECTURE,
    uformer.ARCHITECTURE,
    rvrt.ARCHITECTURE,
)


def architecture(name: str) -> Architecture:
    """The architecture called ``name`` (its name or its filter's name, any case); KeyError lists the known ones."""
    key = name.strip().lower()
    for arch in ARCHITECTURES:
        if key in (arch.name, arch.filter_name.lower()):
            return arch
    known = ", ".join(a.name for a in ARCHITECTURES)
    raise KeyError(f"vsnystra: unknown architecture {name!r}; known: {known}")


def detect(sd: StateDict) -> Architecture | None:
    """The first architecture whose detector accepts this canonical state dict's keys."""
    return next((arch for arch in ARCHITECTURES if arch.detect(sd)), None)


def detect_file(path: str | os.PathLike[str]) -> Architecture | None:
    """Architecture of a checkpoint file from its key names, reading no tensor data (mmap); None if unsure."""
    try:
        return detect(canonical_state_dict(read_checkpoint(path, mmap=True)))
    except Exception:  # old pickle format, corrupt file…: load_model reports it properly
        log.debug("could not detect the architecture of %s", path, exc_info=True)
    return None


def load_model(
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, object], **overrides: object
) -> RestorationModel:
    """Load an official checkpoint (path or already-loaded object) into the matching vsnystra architecture."""
    obj: object = path_or_state_dict
    where = ""
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        obj = read_checkpoint(path_or_state_dict)
        where = f" {path_or_state_dict}"
    sd = canonical_state_dict(obj)
    arch = detect(sd)
    if arch is None:
        hints = "; ".join(f"{a.filter_name}: {a.key_hint}" for a in ARCHITECTURES)
        raise ValueError(
            f"load_model: unrecognised checkpoint{where}: found {len(sd)} tensors, e.g. {list_keys(sorted(sd))}; "
            f"expected one of {[a.name for a in ARCHITECTURES]} ({hints})"
        )
    log.debug("vsnystra: %s detected as %s", where or "state dict", arch.name)
    model = arch.build(sd, **overrides)
    model.eval()
    return model
