"""The CLI's model side: resolve, load (through the shared model cache), patch, and wrap as a frame stream.

Why a stream of frames: RVRT needs neighbouring frames, so the CLI hands ``restore_video`` an iterator and gets
an iterator back (bounded memory for hours-long files); SwinIR and Uformer restore frame by frame with
``restore_image``. Both paths are the same runtime the VapourSynth filters use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

Restorer = Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]]
"""Takes (3, H, W) float32 frames in [0, 1], yields restored (3, sH, sW) float32 frames, same count.

Each model step runs under ``torch.inference_mode`` entered and left around that step only, so no grad-mode
state leaks into the caller while the generator is suspended.
"""

ATTENTION_CHOICES = ("auto", "nystra", "exact", "naive")
DEFAULT_SIGMA = 12.0  # same default as the nystra.RVRT filter (vsnystra/vs/filters.py)


@dataclass(frozen=True)
class ModelSettings:
    """Model options of ``vsnystra restore`` (mirroring the filters' arguments)."""

    model: str
    attention: str = "auto"
    landmarks: int | None = None
    iters: int | None = None
    window: tuple[int, ...] | None = None
    device: str = "auto"
    half: bool = False
    tile: tuple[int, ...] | None = None
    tile_overlap: int | None = None
    chunk: int | None = None
    chunk_overlap: int | None = None
    sigma: float | None = None


def attention_spec(
    name: str, landmarks: int | None, iters: int | None, arch: str | None = None, *, enlarged_window: bool = False
) -> Any:
    """--attention/--landmarks/--iters → an attention spec, with the same per-architecture defaults as the filters.

    "auto" (default) = PnP-Nystra where it pays on the device, else exact; "nystra" = always PnP-Nystra.
    """
    from vsnystra.archs.descriptor import GENERIC_NYSTRA
    from vsnystra.archs.registry import architecture
    from vsnystra.attention.defaults import FRONT_END_PINV_INIT
    from vsnystra.attention.specs import Exact, Naive, PnPNystra

    key = name.strip().lower().replace("_", "-")
    if key in ("nystra", "pnp", "pnp-nystra", "auto"):
        d = GENERIC_NYSTRA if arch is None else architecture(arch).nystra_defaults(enlarged_window=enlarged_window)
        return PnPNystra(
            landmarks=d.landmarks if landmarks is None else landmarks,
            iters=d.iters if iters is None else iters,
            threshold=d.threshold,
            pinv_init=FRONT_END_PINV_INIT,
            policy="auto" if key == "auto" else "always",
        )
    if landmarks is not None or iters is not None:
        raise ValueError("vsnystra restore: --landmarks/--iters only apply with --attention nystra or auto")
    if key == "exact":
        return Exact()
    if key == "naive":
        return Naive()
    raise ValueError(f"vsnystra restore: --attention must be one of {', '.join(ATTENTION_CHOICES)}, got {name!r}")


def default_model() -> str:
    """The model restored when --model is not given: the bundled default of the video architecture."""
    from vsnystra.archs.registry import ARCHITECTURES

    return next(arch.default_model for arch in ARCHITECTURES if arch.kind == "video")


def detect_arch(path: Path) -> str | None:
    """Architecture name of a checkpoint from its key names, reading no tensor data; None if unsure."""
    from vsnystra.archs.registry import detect_file

    arch = detect_file(path)
    return None if arch is None else arch.name


def _one_or_tuple(v: tuple[int, ...] | None) -> int | tuple[int, ...] | None:
    if v is None:
        return None
    return v[0] if len(v) == 1 else v


@dataclass
class LoadedModel:
    """A ready model plus how to run it."""

    model: torch.nn.Module
    arch: str
    scale: int
    device: torch.device
    dtype: torch.dtype
    restorer: Restorer


def load(settings: ModelSettings) -> LoadedModel:
    """Resolve and load the model once for the whole batch; fails early with the fix in the message."""
    from vsnystra.archs.base import model_info
    from vsnystra.runtime.cache import AttentionSetting, default_cache
    from vsnystra.runtime.device import compute_dtype, resolve_device
    from vsnystra.zoo import resolve_model

    path = resolve_model(settings.model)
    device = resolve_device(settings.device, caller="vsnystra restore")
    arch = detect_arch(path)
    dtype = compute_dtype(device, settings.half, arch)
    window = _one_or_tuple(settings.window)
    spec = attention_spec(
        settings.attention, settings.landmarks, settings.iters, arch, enlarged_window=window is not None
    )
    setting = AttentionSetting(spec=spec, window=window)
    model = default_cache().get(path, device=device, dtype=dtype, attention=setting)
    info = model_info(model, "vsnystra restore")
    if info.needs_sigma and settings.sigma is None:
        log.info("no --sigma given: denoising with sigma %g (the nystra.RVRT default)", DEFAULT_SIGMA)
        settings = replace(settings, sigma=DEFAULT_SIGMA)
    if settings.sigma is not None and not info.needs_sigma:
        raise ValueError(
            f"vsnystra restore: --sigma only applies to non-blind denoisers; {path.name} ({info.arch} {info.task}) "
            "takes none, drop --sigma"
        )
    log.info(
        "model %s (%s %s, x%d) on %s/%s, attention %s", path.name, info.arch, info.task, info.scale, device, dtype, spec
    )
    restorer = (
        _video_restorer(model, settings, device, dtype)
        if info.kind == "video"
        else _image_restorer(model, settings, device, dtype)
    )
    return LoadedModel(model, info.arch, int(info.scale), device, dtype, restorer)


def _video_restorer(model: torch.nn.Module, s: ModelSettings, device: torch.device, dtype: torch.dtype) -> Restorer:
    from vsnystra.runtime.video import restore_video

    kwargs: dict[str, Any] = {}
    for name, value in (
        ("chunk", s.chunk),
        ("chunk_overlap", s.chunk_overlap),
        ("tile", _one_or_tuple(s.tile)),  # CLI W,H = restore_video's (w, h)
        ("tile_overlap", s.tile_overlap),
        ("sigma", s.sigma),
    ):
        if value is not None:
            kwargs[name] = value

    def run(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        staged = (torch.from_numpy(f).to(device=device, dtype=dtype, non_blocking=True) for f in frames)
        with torch.inference_mode():
            out = iter(restore_video(model, staged, **kwargs))
        while True:
            with torch.inference_mode():
                y = next(out, None)
                if y is None:
                    return
                arr = y.to("cpu", torch.float32).numpy()
            yield arr

    return run


def _image_restorer(model: torch.nn.Module, s: ModelSettings, device: torch.device, dtype: torch.dtype) -> Restorer:
    from vsnystra.runtime.image import restore_image

    kwargs: dict[str, Any] = {}
    if s.tile is not None:
        kwargs["tile"] = _one_or_tuple(s.tile)  # CLI W,H = restore_image's (w, h)
    if s.tile_overlap is not None:
        kwargs["tile_overlap"] = s.tile_overlap
    if s.chunk is not None or s.chunk_overlap is not None:
        log.warning("--chunk/--chunk-overlap are ignored: image models restore frame by frame")

    def run(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for f in frames:
            with torch.inference_mode():
                y = restore_image(model, torch.from_numpy(f).to(device=device, dtype=dtype), **kwargs)
                arr = y.to("cpu", torch.float32).numpy()
            yield arr

    return run
