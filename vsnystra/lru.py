"""A thread-safe least-recently-used map: the one cache helper of vsnystra (attention analysis, models, chunks).

Why one helper: VapourSynth calls filters from several threads, so every cache must be safe to share, bounded, and
(for expensive values such as a loaded model or an RVRT chunk) compute each key once even when several threads ask
for it at the same moment.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence


class LRU[K: Hashable, V]:
    """At most ``maxsize`` entries; reading or writing an entry makes it the newest, the oldest go first.

    Values must not be None (``get`` returns None for a miss).
    """

    def __init__(self, maxsize: int = 64, *, on_evict: Callable[[K, V], None] | None = None) -> None:
        if maxsize < 1:
            raise ValueError(f"LRU: maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._on_evict = on_evict
        self._lock = threading.Lock()
        self._items: OrderedDict[K, V] = OrderedDict()
        self._creating: dict[K, threading.Lock] = {}

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            evicted = self._store(key, value)
        self._notify(evicted)

    def get_or_create(self, key: K, create: Callable[[], V]) -> V:
        """The value for ``key``, calling ``create`` on a miss; concurrent misses of one key create it once."""
        hit = self.get(key)
        if hit is not None:
            return hit
        with self._lock:
            key_lock = self._creating.setdefault(key, threading.Lock())
        with key_lock:
            hit = self.get(key)
            if hit is not None:
                return hit
            try:
                value = create()
                with self._lock:
                    evicted = self._store(key, value)
            finally:
                with self._lock:
                    self._creating.pop(key, None)
        self._notify(evicted)
        return value

    def evict_while(self, too_big: Callable[[Sequence[V]], bool]) -> None:
        """Drop the oldest entries while ``too_big(values)`` holds (an extra bound, e.g. a byte budget)."""
        evicted: list[tuple[K, V]] = []
        with self._lock:
            while self._items and too_big(list(self._items.values())):
                evicted.append(self._items.popitem(last=False))
        self._notify(evicted)

    def newest_first(self) -> list[tuple[K, V]]:
        """A snapshot of the entries, most recently used first."""
        with self._lock:
            return list(reversed(self._items.items()))

    def pop(self, key: K) -> V | None:
        with self._lock:
            return self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def _store(self, key: K, value: V) -> list[tuple[K, V]]:
        """Insert as the newest entry and evict beyond maxsize (caller holds the lock); returns what was evicted."""
        self._items[key] = value
        self._items.move_to_end(key)
        evicted = []
        while len(self._items) > self.maxsize:
            evicted.append(self._items.popitem(last=False))
        return evicted

    def _notify(self, evicted: list[tuple[K, V]]) -> None:
        if self._on_evict is not None:
            for key, value in evicted:
                self._on_evict(key, value)
