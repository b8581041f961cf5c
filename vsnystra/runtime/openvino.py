"""The OpenVINO back-end: the model exported per input shape (``runtime/export.py``) and compiled for the CPU.

Why: OpenVINO's CPU plugin runs our exported graphs faster than eager PyTorch on some models (see
benchmarks/results/backends.md). Compiled models are cached per input shape and dtype inside one wrapper per loaded
model, so a clip whose frames (or tiles) share one shape compiles once; the converted model is also kept on disk
(:func:`vsnystra.runtime.backends.cache_dir`, keyed by the weights' hash, attention, shape, dtype and the torch and
OpenVINO versions) with OpenVINO's own compiled-blob cache beside it, so a later run skips the export. The wrapper is
an ``nn.Module`` holding the torch model, so ``restore_image`` and ``restore_chunk`` pad, tile and crop exactly as
for torch.

Video models (RVRT) take a whole temporal chunk (1, T, C, H, W): the traced recurrence unrolls over T, so each chunk
length is its own export (minutes). The front ends wrap RVRT with ``frames`` = their chunk length: chunks of that
length (after the runtime's even padding) run through OpenVINO, shorter ones (a short scene or clip) through torch,
so one graph serves a clip and every chunk's result is the same whichever order frames are requested in. A non-blind
denoiser's sigma map is the input's last channel, so the noise level is a graph input: a new sigma (per scene) is no
new export. backend="auto" also keeps chunks of more than :data:`AUTO_MAX_VIDEO_PIXELS` pixels on torch: the
exported alignment holds every sampled key and value at once (``archs/rvrt_gda_traced.py``), so OpenVINO's memory
grows about three times as fast as the eager kernels' (which work in bands), and larger chunks were not measured.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vsnystra.archs.base import RestorationModel, SizeRule
from vsnystra.lru import LRU
from vsnystra.runtime.backends import BACKEND_CHOICES, cache_dir, openvino_available
from vsnystra.runtime.export import ExportError, check_exportable, write_onnx

log = logging.getLogger(__name__)
_MAX_SHAPES = 8
# backend="auto": video chunks with more (padded) pixels (frames x height x width) run with torch. The largest chunk
# measured, rvrt-denoise-small 6 x 480 x 480: OpenVINO 1.57x faster, peak memory 3.7 GiB against torch's 1.1 GiB
# (benchmarks/results/backends.md): about 14 KB per frame pixel of a 6-frame chunk, so 1080p frames would not fit.
AUTO_MAX_VIDEO_PIXELS = 6 * 480 * 480
__all__ = ["BACKEND_CHOICES", "OpenVINOModel", "openvino_available", "with_backend"]


def weights_hash(model: nn.Module) -> str:
    """sha256 of the state dict (names, dtypes, shapes, bytes) and of every attention spec: what the graph holds."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    for name, module in model.named_modules():
        spec = getattr(module, "spec", None)
        cfg = getattr(module, "cfg", None)
        if spec is not None or cfg is not None:
            h.update(f"{name}{spec!r}{cfg!r}".encode())
    return h.hexdigest()


class OpenVINOModel(RestorationModel):
    """Runs ``model`` through OpenVINO on the CPU, one compiled model per (shape, dtype) of its input.

    ``fallback``: when the model cannot be exported, run the torch model instead (one warning) rather than fail;
    backend="auto" sets it (and with it the video pixel limit). ``disk_cache``: the converted-model folder (None: no
    disk cache). ``frames``: for video models, the only clip length run through OpenVINO (None: every length).
    """

    def __init__(
        self,
        model: RestorationModel,
        threads: int | None = None,
        *,
        fallback: bool = False,
        disk_cache: Path | None = None,
        frames: int | None = None,
    ) -> None:
        super().__init__()
        check_exportable(model, "openvino")
        self.torch_model = model
        self.info = model.info
        self.threads = threads
        self.fallback = fallback
        self.disk_cache = disk_cache
        self.frames = frames if model.info.kind == "video" else None
        self._compiled: LRU[tuple[object, ...], Any] = LRU(_MAX_SHAPES)
        self._hash: str | None = None
        self.compiles = 0  # compile_model calls (in-memory misses)
        self.exports = 0  # torch.export + conversions (disk-cache misses)
        self.failed: str | None = None  # why the export failed (fallback: the torch model runs)

    def size_rule(self) -> SizeRule:
        return self.torch_model.size_rule()

    def runs_openvino(self, shape: tuple[int, ...] | torch.Size) -> bool:
        """Whether an input of ``shape`` runs through OpenVINO (else torch): every image; a video chunk of the
        wrapper's clip length (and, under backend="auto", of at most :data:`AUTO_MAX_VIDEO_PIXELS` pixels)."""
        if self.info.kind != "video":
            return True
        if self.frames is not None and shape[1] != self.frames:
            return False
        return not (self.fallback and shape[1] * shape[-2] * shape[-1] > AUTO_MAX_VIDEO_PIXELS)

    def compiled(self, x: torch.Tensor) -> Any:
        """The compiled model for ``x``'s shape and dtype (exported and compiled on first use)."""
        key = (tuple(x.shape), x.dtype, self.threads or torch.get_num_threads())
        return self._compiled.get_or_create(key, lambda: self._compile(x, key[2]))

    def _cache_key(self, x: torch.Tensor) -> str:
        import openvino as ov

        if self._hash is None:
            self._hash = weights_hash(self.torch_model)
        shape = "x".join(str(s) for s in x.shape)
        text = f"{self._hash}|{shape}|{x.dtype}|torch {torch.__version__}|openvino {ov.__version__}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def _converted(self, x: torch.Tensor) -> Any:
        """The OpenVINO model for ``x``'s shape: from the disk cache, or exported (through ONNX) and stored there."""
        import openvino as ov

        core = ov.Core()
        folder = None if self.disk_cache is None else self.disk_cache / self._cache_key(x)
        if folder is not None and (folder / "model.xml").is_file():
            return core.read_model(str(folder / "model.xml"))
        with tempfile.TemporaryDirectory(prefix="vsnystra-ov-") as tmp:
            onnx = Path(tmp) / "model.onnx"  # through ONNX: OpenVINO's torch.export front end lacks some aten ops
            # OpenVINO optimises the graph itself: skipping onnxscript's rewriter halves the conversion time
            write_onnx(self.torch_model, torch.zeros_like(x, device="cpu"), onnx, optimize=False)
            self.exports += 1
            converted = core.read_model(str(onnx))
            if folder is not None:
                _store(converted, folder)
        return converted

    def add_onnx(self, path: str | Path, example: torch.Tensor) -> None:
        """Store ``path``, an ONNX file of this model at ``example``'s shape (``write_onnx(..., optimize=False)``, as
        the wrapper converts), in the disk cache: the first call at that shape then skips the export.
        benchmarks/backends.py times one export for both OpenVINO and ONNX Runtime this way."""
        import openvino as ov

        if self.disk_cache is None:
            raise ValueError("openvino: add_onnx needs a disk cache; pass OpenVINOModel(..., disk_cache=FOLDER)")
        _store(ov.Core().read_model(str(path)), self.disk_cache / self._cache_key(example))

    def _compile(self, x: torch.Tensor, threads: object) -> Any:
        import openvino as ov

        converted = self._converted(x)
        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
        if x.dtype == torch.bfloat16:
            config["INFERENCE_PRECISION_HINT"] = "bf16"
        if self.disk_cache is not None:
            config["CACHE_DIR"] = str(self.disk_cache / "blobs")
        self.compiles += 1
        return ov.Core().compile_model(converted, "CPU", config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise ValueError(f"openvino: runs on the CPU, got an input on {x.device}; use device='cpu' tensors")
        if self.failed is not None or not self.runs_openvino(x.shape):
            return self.torch_model(x)
        try:
            compiled = self.compiled(x)
        except Exception as exc:
            if not self.fallback:
                raise
            self.failed = f"{type(exc).__name__}: {exc}".splitlines()[0]
            log.warning("openvino: cannot export %s (%s); running it with torch", self.info.arch, self.failed)
            return self.torch_model(x)
        result = compiled(x.detach().float().contiguous().numpy())[0]
        return torch.from_numpy(result).to(x.dtype)


def _store(converted: Any, folder: Path) -> None:
    """Save the converted model as OpenVINO IR into ``folder`` atomically (a rename of a finished folder)."""
    import openvino as ov

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        ov.save_model(converted, str(tmp / "model.xml"), compress_to_fp16=False)
        os.replace(tmp, folder)
    except OSError as exc:  # another process stored it first, or the cache is read-only: the model is still usable
        log.debug("openvino: not cached in %s (%s)", folder, exc)
        shutil.rmtree(tmp, ignore_errors=True)


_WRAPPED: weakref.WeakKeyDictionary[nn.Module, dict[tuple[bool, int | None], OpenVINOModel]] = (
    weakref.WeakKeyDictionary()
)
_WRAPPED_LOCK = threading.Lock()


def with_backend(
    model: nn.Module, backend: str, *, disk_cache: Path | bool | None = True, frames: int | None = None
) -> nn.Module:
    """``model`` for a resolved ``backend``: itself for "torch"; its shared, compile-caching OpenVINO wrapper for
    "openvino" (failing when it cannot be exported) and "openvino-auto" (falling back to torch then).
    ``disk_cache``: True = the user cache folder, a path, or False/None = none. ``frames``: a video model's chunk
    length, the one clip length compiled (:class:`OpenVINOModel`; ignored for image models)."""
    if backend == "torch":
        return model
    if backend not in ("openvino", "openvino-auto"):
        raise ValueError(f"backend must be one of {', '.join(BACKEND_CHOICES)}, got {backend!r}")
    if not isinstance(model, RestorationModel):
        raise TypeError(f"openvino: expected a model loaded with vsnystra.load_model, got {type(model).__name__}")
    fallback = backend == "openvino-auto"
    frames = frames if model.info.kind == "video" else None
    folder = cache_dir() if disk_cache is True else (disk_cache or None)
    with _WRAPPED_LOCK:
        per_model = _WRAPPED.setdefault(model, {})
        wrapped = per_model.get((fallback, frames))
        if wrapped is None:
            try:
                wrapped = OpenVINOModel(model, fallback=fallback, disk_cache=folder, frames=frames)
            except ExportError as exc:
                if not fallback:
                    raise
                log.warning("openvino: %s; running the model with torch", exc)
                return model
            per_model[fallback, frames] = wrapped
        return wrapped
