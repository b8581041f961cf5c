"""Process-wide cache of loaded models: one instance per (checkpoint, device, dtype, attention configuration).

Why: a .vpy may call a filter several times (preview tools re-evaluate scripts, several clips share a model), and
loading + patching + moving a model costs seconds and memory. Loading is thread-safe and happens once per key even
when several threads ask at the same moment (the others wait for the first).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vsnystra.archs.base import AttentionConfig
from vsnystra.archs.patch import patch_attention
from vsnystra.archs.registry import load_model
from vsnystra.lru import LRU
from vsnystra.runtime.settings import check_trained_window

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelKey:
    """Identity of a cached model. The file's size and mtime are part of it so that a rewritten file reloads."""

    path: str
    stamp: tuple[int, int]
    device: str
    dtype: str
    attention: AttentionConfig
    overrides: tuple[tuple[str, Hashable], ...] = ()


Loader = Callable[[Path, Mapping[str, object]], nn.Module]


def _default_loader(path: Path, overrides: Mapping[str, object]) -> nn.Module:
    return load_model(str(path), **dict(overrides))


def _patch(model: nn.Module, setting: AttentionConfig) -> nn.Module:
    if setting.is_stock():
        return model
    return patch_attention(
        model,
        setting.spec,
        window=setting.window,
        bias=setting.bias,
        mask=setting.mask,
        modulator=setting.modulator,
    )


class ModelCache:
    """Thread-safe LRU of ready-to-run models (loaded, patched, moved, ``eval()``, no grad)."""

    def __init__(self, capacity: int = 4, loader: Loader | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"ModelCache: capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._loader: Loader = loader or _default_loader
        self._models: LRU[ModelKey, nn.Module] = LRU(capacity, on_evict=_log_eviction)
        self.loads = 0  # number of actual loads (tests check that a second request does not reload)

    @staticmethod
    def key(
        path: str | Path,
        *,
        device: torch.device,
        dtype: torch.dtype,
        attention: AttentionConfig | None = None,
        overrides: Mapping[str, Hashable] | None = None,
    ) -> ModelKey:
        """Build the cache key; raises FileNotFoundError when the checkpoint does not exist."""
        p = Path(path).expanduser().resolve()
        st = p.stat()
        return ModelKey(
            path=str(p),
            stamp=(st.st_size, st.st_mtime_ns),
            device=str(device),
            dtype=str(dtype).removeprefix("torch."),
            attention=attention or AttentionConfig(),
            overrides=tuple(sorted((overrides or {}).items())),
        )

    def get(
        self,
        path: str | Path,
        *,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        attention: AttentionConfig | None = None,
        overrides: Mapping[str, Hashable] | None = None,
    ) -> nn.Module:
        """The model for this key, loading it on first use. Concurrent first uses load it once."""
        key = self.key(path, device=device, dtype=dtype, attention=attention, overrides=overrides)
        return self._models.get_or_create(key, lambda: self._build(key))

    def _build(self, key: ModelKey) -> nn.Module:
        log.debug("loading %s on %s (%s, attention %s)", key.path, key.device, key.dtype, key.attention.spec)
        model = self._loader(Path(key.path), dict(key.overrides))
        info = getattr(model, "info", None)
        if info is not None:  # before patching: the blocks would accept a smaller window, or fail on another rule
            check_trained_window(key.attention.window, info, Path(key.path).name)
        model = _patch(model, key.attention)
        model = model.to(device=torch.device(key.device), dtype=getattr(torch, key.dtype))
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.loads += 1
        return model

    def clear(self) -> None:
        """Drop every cached model (frees GPU memory once no clip holds a reference)."""
        self._models.clear()

    def __len__(self) -> int:
        return len(self._models)


def _log_eviction(key: ModelKey, model: nn.Module) -> None:
    log.debug("model cache: evicted %s", key.path)


_DEFAULT: ModelCache | None = None
_DEFAULT_LOCK = threading.Lock()


def default_cache() -> ModelCache:
    """The process-wide cache used by the filters and the CLI (created on first use, not at import)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = ModelCache()
        return _DEFAULT
