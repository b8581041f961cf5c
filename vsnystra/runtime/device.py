"""Device and precision policy shared by the VapourSynth filters and the command line.

Why one place: "auto" must mean the same thing everywhere (CUDA when present, else CPU), a missing device must fail
before a model is loaded, and half-precision input must map to the same compute dtype in both front ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from vsnystra.archs.descriptor import Architecture
from vsnystra.archs.registry import architecture

log = logging.getLogger(__name__)


DEVICE_CHOICES = ('"auto"', '"cpu"', '"cuda"', '"cuda:N"')


def cuda_available() -> bool:
    """True when torch sees at least one CUDA device (isolated so tests can monkeypatch it)."""
    return bool(torch.cuda.is_available())


def cuda_device_count() -> int:
    """Number of CUDA devices torch sees (0 without CUDA)."""
    return int(torch.cuda.device_count()) if cuda_available() else 0


def resolve_device(spec: str | torch.device | None = "auto", *, caller: str = "vsnystra") -> torch.device:
    """Turn "auto" | "cpu" | "cuda" | "cuda:N" into a torch.device that exists, or raise a ValueError naming the fix.

    "auto" takes CUDA device 0 when present, else the CPU.
    """
    if isinstance(spec, torch.device):
        text = str(spec)
    elif spec is None:
        text = "auto"
    elif isinstance(spec, (bytes, bytearray)):
        text = bytes(spec).decode("utf-8", "replace")
    else:
        text = str(spec)
    text = text.strip().lower()
    if text == "auto":
        return torch.device("cuda", 0) if cuda_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        index = 0
        if text != "cuda":
            suffix = text[5:]
            if not suffix.isdigit():
                raise ValueError(f"{caller}: device {spec!r} is not understood; use one of {', '.join(DEVICE_CHOICES)}")
            index = int(suffix)
        count = cuda_device_count()
        if count == 0:
            raise ValueError(
                f"{caller}: device {spec!r} was requested but torch sees no CUDA device "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); "
                'use device="cpu" or "auto", or install a CUDA build of torch'
            )
        if index >= count:
            raise ValueError(
                f"{caller}: device {spec!r} does not exist, torch sees {count} CUDA device(s); "
                f'use device="cuda:0" … "cuda:{count - 1}"'
            )
        return torch.device("cuda", index)
    raise ValueError(f"{caller}: device {spec!r} is not understood; use one of {', '.join(DEVICE_CHOICES)}")


def cpu_has_native_bf16() -> bool:
    """True on CPUs that run bf16 matmuls and convolutions natively (AVX512-BF16 or AMX), isolated for tests."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def compute_dtype(device: torch.device, half: bool, arch: str | Architecture | None = None) -> torch.dtype:
    """The dtype a model of ``arch`` (an Architecture or its name) runs in for input of this precision on ``device``.

    Single-precision input always runs in fp32. Half-precision input runs in fp16 on CUDA (tensor cores, half the
    memory). On a CPU, fp16 has no fast kernels and bf16 is only fast where the CPU has it natively (elsewhere it is
    emulated, many times slower than fp32), so half input runs in bf16 there, and only for architectures whose
    quality survives bf16 (``Architecture.cpu_bf16``); everything else runs in fp32. Outputs are rounded to the
    clip's precision afterwards.
    """
    if not half:
        return torch.float32
    if device.type == "cuda":
        return torch.float16
    described = architecture(arch) if isinstance(arch, str) else arch
    bf16_ok = described is None or described.cpu_bf16
    return torch.bfloat16 if bf16_ok and cpu_has_native_bf16() else torch.float32


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA out-of-memory errors (torch.OutOfMemoryError or the older RuntimeError message)."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def smaller_tile(tile: Sequence[int] | None, size: tuple[int, int], multiple: int = 8) -> tuple[int, int] | None:
    """Next tile to try after an out-of-memory error: half the current one (``size`` = (w, h) when untiled).

    Returns None when the tile cannot shrink further (sides below 2 * multiple).
    """
    w, h = (int(tile[0]), int(tile[1])) if tile else (int(size[0]), int(size[1]))
    nw = max(multiple, (w // 2) // multiple * multiple)
    nh = max(multiple, (h // 2) // multiple * multiple)
    if (nw, nh) == (w, h) or (nw >= w and nh >= h):
        return None
    return nw, nh


def run_with_oom_retry[T](
    fn: Callable[[tuple[int, int] | None], T],
    *,
    tile: Sequence[int] | None,
    size: tuple[int, int],
    device: torch.device,
    caller: str = "vsnystra",
    multiple: int = 8,
) -> T:
    """Call ``fn(tile)``; on CUDA out of memory, free the cache and retry with smaller tiles instead of failing."""
    current: tuple[int, int] | None = (int(tile[0]), int(tile[1])) if tile else None
    while True:
        try:
            return fn(current)
        except Exception as exc:
            if device.type != "cuda" or not is_out_of_memory(exc):
                raise
            nxt = smaller_tile(current, size, multiple)
            if nxt is None:
                raise RuntimeError(
                    f"{caller}: CUDA out of memory even with tile={list(current) if current else None}; "
                    'use a smaller clip, device="cpu", or free GPU memory'
                ) from exc
            log.warning("%s: CUDA out of memory with tile=%s, retrying with tile=%s", caller, current, list(nxt))
            torch.cuda.empty_cache()
            current = nxt


_EXECUTORS: dict[str, ThreadPoolExecutor] = {}
_EXECUTORS_GUARD = threading.Lock()
_ON_DEVICE_THREAD = threading.local()


def _mark_device_thread() -> None:
    _ON_DEVICE_THREAD.active = True


def run_on_device[T](device: torch.device, fn: Callable[[], T]) -> T:
    """Run ``fn`` on the device's single inference thread and wait for its result (exceptions propagate).

    Why: VapourSynth calls filters from several worker threads. Model calls must not overlap (torch already spreads
    one call over all CPU cores; on a GPU, overlapping calls only add activation memory), and each calling thread
    would otherwise get its own OpenMP thread team, whose idle spinning threads steal cores from the team that
    works (benchmarks/pipeline.py measures it). One long-lived thread per device keeps one team and serialises the
    calls. Grad mode is per thread: ``fn`` must set ``torch.no_grad()`` itself.
    """
    if getattr(_ON_DEVICE_THREAD, "active", False):  # already on an inference thread: never wait on ourselves
        return fn()
    key = str(device)
    with _EXECUTORS_GUARD:
        ex = _EXECUTORS.get(key)
        if ex is None:
            ex = _EXECUTORS[key] = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"vsnystra-{key}", initializer=_mark_device_thread
            )
    return ex.submit(fn).result()
