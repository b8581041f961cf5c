"""Per-mask analysis cache: region labels, pattern runs and region landmarks, computed once per mask.

Analysing a (nW, N, N) mask costs a few passes over it, as much as reading it in exact attention. Models pass the
same mask tensor on every call (SwinIR buffers, Uformer's and RVRT's mask caches), so entries are found by tensor
identity (a weak reference proves the tensor is the same object); a mask rebuilt on every call (e.g. moved to the
GPU or cast each time) is found by content with one torch.equal, which needs the cache to hold it: masks up to a
quarter of the byte budget are held, larger ones only weakly.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from vsnystra.attention.grid import MaskRuns, RegionLandmarks, mask_labels, mask_runs, region_landmarks
from vsnystra.attention.tracing import refuse_trace
from vsnystra.lru import LRU

_BUDGET_BYTES = 512 << 20
_MAX_ENTRIES = 64


@dataclass
class _Entry:
    ref: Callable[[], torch.Tensor | None]  # the mask (strong or weak reference)
    held: torch.Tensor | None  # the mask when held strongly (content matching), else None
    version: int
    labels: torch.Tensor | None
    runs: MaskRuns | None = None
    regions: dict[tuple[tuple[int, ...], tuple[int, ...]], RegionLandmarks] = field(default_factory=dict)


_entries: LRU[int, _Entry] = LRU(_MAX_ENTRIES)


def _version(t: torch.Tensor) -> int:
    """In-place version counter; inference tensors have none (-1)."""
    return -1 if t.is_inference() else t._version


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _held_bytes(entries: Sequence[_Entry]) -> int:
    return sum(_nbytes(e.held) for e in entries if e.held is not None)


def _entry(mask: torch.Tensor) -> _Entry:
    refuse_trace(mask)  # a traced mask has no values; refusing here keeps fake tensors out of the cache
    version = _version(mask)
    hit = _entries.get(id(mask))
    if hit is not None and hit.ref() is mask and hit.version == version:
        return hit
    for key, e in _entries.newest_first():
        held = e.held
        if (
            held is not None
            and held.shape == mask.shape
            and held.dtype == mask.dtype
            and held.device == mask.device
            and torch.equal(held, mask)
        ):
            _entries.get(key)  # mark as used
            return e
    small = _nbytes(mask) <= _BUDGET_BYTES // 4
    ref: Callable[[], torch.Tensor | None] = (lambda: mask) if small else weakref.ref(mask)
    entry = _Entry(ref, mask if small else None, version, mask_labels(mask))
    _entries.put(id(mask), entry)
    _entries.evict_while(lambda entries: _held_bytes(entries) > _BUDGET_BYTES)
    return entry


def cached_mask_runs(mask: torch.Tensor) -> MaskRuns | None:
    """Windows grouped by mask pattern, or None when the mask is not a 0/-100 region mask."""
    e = _entry(mask)
    if e.labels is None:
        return None
    if e.runs is None:
        e.runs = mask_runs(e.labels)
    return e.runs


def cached_region_landmarks(
    mask: torch.Tensor, grid: tuple[int, ...], lgrid: tuple[int, ...]
) -> RegionLandmarks | None:
    """Region-respecting landmark pieces for this mask and grid, or None when it is not a region mask."""
    e = _entry(mask)
    if e.labels is None:
        return None
    key = (grid, lgrid)
    if key not in e.regions:
        e.regions[key] = region_landmarks(e.labels, grid, lgrid)
    return e.regions[key]
