"""Reading checkpoints and loading them strictly: shared by every architecture's build and by the registry."""

from __future__ import annotations

import contextlib
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vsnystra.archs.base import StateDict

CONTAINER_KEYS: tuple[str, ...] = ("params_ema", "params", "state_dict", "model", "net")
_SHOW = 8


def read_checkpoint(path: str | os.PathLike[str], *, mmap: bool = False) -> object:
    """torch.load a checkpoint on the CPU (weights only); errors name the file and the fix."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"load_model: checkpoint not found: {p}; pass an existing .pth file or a state dict")
    if p.is_dir():
        raise IsADirectoryError(f"load_model: {p} is a directory; pass the checkpoint file (.pth) inside it")
    try:
        return torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:  # torch's text advises weights_only=False, which is never passed on
        text = str(err)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if found is None:  # not a checkpoint's pickle: name what the unpickler found, not torch's advice
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
            raise _unreadable(p, pickle.UnpicklingError(detail.group(1).strip() if detail else "bad pickle")) from None
        raise ValueError(
            f"load_model: {p} holds Python objects besides tensors (e.g. {found.group(1)}), and vsnystra loads "
            "tensors only (loading arbitrary objects could run code from the file); save the weights alone: "
            "torch.save(model.state_dict(), path)"
        ) from None
    except Exception as err:  # torch raises several types for truncated zips / pickles
        raise _unreadable(p, err) from err


def _unreadable(p: Path, err: Exception) -> ValueError:
    return ValueError(
        f"load_model: could not read checkpoint {p} ({type(err).__name__}: {err}); expected a PyTorch "
        "checkpoint written by torch.save (the file may be truncated or corrupt: download it again)"
    )


def canonical_state_dict(obj: object) -> dict[str, torch.Tensor]:
    """Unwrap {'params_ema'|'params'|'state_dict'|...} containers and strip DataParallel 'module.' prefixes."""
    sd: object = obj
    for _ in range(3):  # nested containers, e.g. {'state_dict': {'params': ...}} are rare but cheap to handle
        if not isinstance(sd, Mapping):
            break
        key = next((k for k in CONTAINER_KEYS if isinstance(sd.get(k), Mapping)), None)
        if key is None:
            break
        sd = sd[key]
    if not isinstance(sd, Mapping):
        raise TypeError(f"load_model: expected a state dict (mapping of names to tensors), got {type(obj).__name__}")
    tensors = {str(k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ValueError(
            f"load_model: the checkpoint holds no tensors (top-level keys: {sorted(map(str, sd))[:_SHOW]}); "
            f"expected a state dict or a container with one of {list(CONTAINER_KEYS)}"
        )
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def list_keys(keys: list[str]) -> str:
    """The first few keys, and how many more there are."""
    more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def _closest(hp: Mapping[str, Any], known: Mapping[str, Mapping[str, Any]]) -> str:
    if not known:
        return ""
    best = max(known, key=lambda name: sum(hp.get(k) == v for k, v in known[name].items()))
    return f"; closest released configuration: {best} ({dict(known[best])})"


def with_overrides(arch: str, hp: dict[str, Any], overrides: Mapping[str, object]) -> dict[str, Any]:
    """Constructor arguments read from the weights, updated by the caller's overrides (unknown names refused)."""
    unknown = set(overrides) - set(hp)
    if unknown:
        raise TypeError(f"load_model: unknown {arch} override(s) {sorted(unknown)}; allowed: {sorted(hp)}")
    return {**hp, **overrides}


def construction_device(sd: StateDict) -> contextlib.AbstractContextManager[object]:
    """Build on the meta device when the state dict is made of meta tensors (cheap shape-only checks)."""
    if any(t.is_meta for t in sd.values()):
        return torch.device("meta")
    return contextlib.nullcontext()


def load_into[M: nn.Module](
    model: M,
    sd: Mapping[str, torch.Tensor],
    arch: str,
    hp: Mapping[str, Any],
    known: Mapping[str, Mapping[str, Any]] | None = None,
) -> M:
    """Strict load with an error that names missing/unexpected keys, mismatched shapes and the closest variant."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {list_keys(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {list_keys(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} mismatched shape(s): {list_keys(shapes)}")
        shown = {k: v for k, v in hp.items() if k != "store_masks"}
        raise ValueError(
            f"load_model: {arch} checkpoint does not match the model built from its shapes {shown}: "
            + "; ".join(parts)
            + _closest(hp, known or {})
            + ". The file may be truncated, from another architecture, or need an override (load_model(path, key=...))"
        )
    meta = any(t.is_meta for t in sd.values())
    # copy_ upcasts fp16-stored tensors to the fp32 parameters; meta (shape-only) dicts are assigned instead
    model.load_state_dict(sd, strict=True, assign=meta)
    model.eval()
    return model
