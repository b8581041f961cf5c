"""The shared LRU helper: bound, order, extra eviction rule, and one creation per key under concurrency."""

from __future__ import annotations

import threading
import time

import pytest

from vsnystra.lru import LRU


def test_oldest_goes_first_and_use_refreshes() -> None:
    evicted: list[str] = []
    lru: LRU[str, int] = LRU(2, on_evict=lambda k, v: evicted.append(k))
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # "a" is now the newest
    lru.put("c", 3)
    assert evicted == ["b"] and lru.get("b") is None and len(lru) == 2
    assert [k for k, _ in lru.newest_first()] == ["c", "a"]
    lru.evict_while(lambda values: sum(values) > 3)
    assert [k for k, _ in lru.newest_first()] == ["c"] and evicted == ["b", "a"]
    assert lru.pop("c") == 3 and len(lru) == 0
    with pytest.raises(ValueError, match="maxsize"):
        LRU(0)


def test_concurrent_misses_create_once() -> None:
    lru: LRU[int, int] = LRU(4)
    calls: list[int] = []
    start = threading.Barrier(4)

    def create() -> int:
        calls.append(1)
        time.sleep(0.05)
        return 42

    def worker(out: list[int]) -> None:
        start.wait()
        out.append(lru.get_or_create(7, create))

    results: list[int] = []
    threads = [threading.Thread(target=worker, args=(results,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [42] * 4 and len(calls) == 1


def test_a_failed_creation_is_retried() -> None:
    lru: LRU[str, int] = LRU(2)

    def broken() -> int:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        lru.get_or_create("k", broken)
    assert lru.get_or_create("k", lambda: 5) == 5
