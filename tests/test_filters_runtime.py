"""The runtime pieces the filters (and the CLI) share: device policy, OOM retry, model cache; stdout hygiene."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest
import torch
import vapoursynth as vs
from torch import nn

from vsnystra.archs.base import AttentionConfig
from vsnystra.attention.specs import Exact, PnPNystra
from vsnystra.runtime import device as D
from vsnystra.runtime.cache import ModelCache

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SWINIR = SHARED / "fixtures" / "parity" / "swinir_classical_x2.pth"


def test_resolve_device_auto_and_explicit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(D, "cuda_available", lambda: False)
    assert D.resolve_device("auto") == torch.device("cpu")
    assert D.resolve_device(None) == torch.device("cpu")
    assert D.resolve_device(b"CPU") == torch.device("cpu")
    monkeypatch.setattr(D, "cuda_available", lambda: True)
    monkeypatch.setattr(D, "cuda_device_count", lambda: 2)
    assert D.resolve_device("auto") == torch.device("cuda", 0)
    assert D.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"x: device 'cuda:2' does not exist"):
        D.resolve_device("cuda:2", caller="x")
    with pytest.raises(ValueError, match="not understood"):
        D.resolve_device("tpu")


def test_compute_dtype_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    for native in (False, True):
        monkeypatch.setattr(D, "cpu_has_native_bf16", lambda native=native: native)
        assert D.compute_dtype(cpu, half=False) is torch.float32
        assert D.compute_dtype(cuda, half=False) is torch.float32
        assert D.compute_dtype(cuda, half=True) is torch.float16
        # RGBH on a CPU: bf16 where it is native (fast), else fp32 (emulated bf16 is many times slower)
        assert D.compute_dtype(cpu, half=True) is (torch.bfloat16 if native else torch.float32)
        assert D.compute_dtype(cpu, True, "uformer") is (torch.bfloat16 if native else torch.float32)
        assert D.compute_dtype(cpu, True, "rvrt") is torch.float32  # 0.6 dB lost in bf16 (see the docstring)
        assert D.compute_dtype(cuda, True, "rvrt") is torch.float16


def test_native_bf16_probe_matches_the_cpu_flags() -> None:
    flags = set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this platform")
    assert D.cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})


def test_out_of_memory_retries_with_smaller_tiles() -> None:
    tried: list[tuple[int, int] | None] = []

    def fn(tile: tuple[int, int] | None) -> str:
        tried.append(tile)
        if tile is None or tile[0] > 64:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "ok"

    assert D.run_with_oom_retry(fn, tile=None, size=(320, 240), device=torch.device("cuda", 0)) == "ok"
    assert tried == [None, (160, 120), (80, 56), (40, 24)]
    # other errors and CPU out-of-memory are not retried
    with pytest.raises(ValueError):
        D.run_with_oom_retry(
            lambda t: (_ for _ in ()).throw(ValueError("x")), tile=None, size=(8, 8), device=torch.device("cuda", 0)
        )
    with pytest.raises(torch.OutOfMemoryError):
        D.run_with_oom_retry(fn, tile=None, size=(320, 240), device=torch.device("cpu"))


def test_out_of_memory_gives_up_with_a_clear_error() -> None:
    def always(tile: tuple[int, int] | None) -> None:
        raise RuntimeError("CUDA error: out of memory")

    with pytest.raises(RuntimeError, match="out of memory even with tile"):
        D.run_with_oom_retry(always, tile=[64, 64], size=(640, 480), device=torch.device("cuda", 0))


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)


def test_model_cache_loads_once_per_key_under_contention(tmp_path: Path) -> None:
    ckpt = tmp_path / "m.pth"
    ckpt.write_bytes(b"x")
    loads: list[Path] = []

    def loader(path: Path, overrides: object) -> nn.Module:
        loads.append(path)
        time.sleep(0.05)
        return Tiny()

    cache = ModelCache(capacity=2, loader=loader)
    cpu = torch.device("cpu")
    results: list[nn.Module] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(ckpt, device=cpu))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and all(r is results[0] for r in results)
    assert not any(p.requires_grad for p in results[0].parameters()) and not results[0].training
    half = cache.get(ckpt, device=cpu, dtype=torch.float16)
    assert half is not results[0] and half.conv.weight.dtype == torch.float16
    assert len(loads) == 2
    cache.get(ckpt, device=cpu, attention=AttentionConfig(spec=Exact()))  # same as the default key
    assert len(loads) == 2
    ckpt.write_bytes(b"xy")  # a rewritten file is a new key
    cache.get(ckpt, device=cpu)
    assert len(loads) == 3 and len(cache) == 2  # LRU capacity
    with pytest.raises(FileNotFoundError):
        cache.get(tmp_path / "missing.pth", device=cpu)


@pytest.mark.skipif(not SWINIR.is_file(), reason="../shared/fixtures/parity is missing")
def test_model_cache_patches_attention() -> None:
    cache = ModelCache()
    cpu = torch.device("cpu")
    stock = cache.get(SWINIR, device=cpu)
    setting = AttentionConfig(spec=PnPNystra(landmarks=16, iters=2), window=16)
    patched = cache.get(SWINIR, device=cpu, attention=setting)
    assert patched is not stock and cache.loads == 2
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert (stock(x) - patched(x)).abs().max() > 1e-4


@pytest.mark.skipif(not SWINIR.is_file(), reason="../shared/fixtures/parity is missing")
def test_filters_write_nothing_to_stdout(capfd: pytest.CaptureFixture[str]) -> None:
    from vsnystra.vs.filters import SwinIR

    clip = vs.core.std.BlankClip(format=vs.RGBS, width=24, height=16, length=1)
    SwinIR(clip, model=str(SWINIR), device="cpu").get_frame(0)
    out, _ = capfd.readouterr()
    assert out == ""


def test_run_on_device_uses_one_thread_serialises_and_propagates() -> None:
    dev = torch.device("cpu")
    names: set[str] = set()
    active = [0]
    peak = [0]
    guard = threading.Lock()

    def work() -> int:
        with guard:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        names.add(threading.current_thread().name)
        time.sleep(0.01)
        with guard:
            active[0] -= 1
        return D.run_on_device(dev, lambda: 7)  # nested call runs inline instead of deadlocking

    threads = [threading.Thread(target=lambda: D.run_on_device(dev, work)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == 1 and len(names) == 1 and next(iter(names)).startswith("vsnystra-cpu")
    with pytest.raises(ZeroDivisionError):
        D.run_on_device(dev, lambda: 1 // 0)
