"""The CLI's model side: resolve the options, load (through the shared model cache), wrap as a frame stream.

Why a stream of frames: RVRT needs neighbouring frames, so the CLI hands ``restore_video`` an iterator and gets
an iterator back (bounded memory for hours-long files); SwinIR and Uformer restore frame by frame with
``restore_image``. Both paths are the same runtime the VapourSynth filters use, and the options go through the same
resolver (:mod:`vsnystra.runtime.settings`), so both reject the same bad settings with the same words.
"""

from __future__ import annotations

import argparse
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from vsnystra.archs.base import model_info
from vsnystra.archs.registry import ARCHITECTURES
from vsnystra.runtime.cache import default_cache
from vsnystra.runtime.image import restore_image
from vsnystra.runtime.noise import estimate_sigma
from vsnystra.runtime.openvino import with_backend
from vsnystra.runtime.settings import Options, WindowTooSmall, check_model, fail, resolve
from vsnystra.runtime.video import restore_video

log = logging.getLogger(__name__)

CALLER = "vsnystra restore"
SIGMA_FRAMES = 8  # frames a noise estimate reads (the filters read the same number per scene)

Restorer = Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]]
"""Takes (3, H, W) float32 frames in [0, 1], yields restored (3, sH, sW) float32 frames, same count.

Each model step runs under ``torch.inference_mode`` entered and left around that step only, so no grad-mode
state leaks into the caller while the generator is suspended.
"""


def model_options(args: argparse.Namespace) -> Options:
    """The model options of a parsed ``vsnystra restore`` command line (flags named as the filters' keywords)."""
    return Options(
        model=args.model or default_model(),
        attention=args.attention,
        landmarks=args.landmarks,
        iters=args.iters,
        window=args.window,
        device=args.device,
        half=args.half,
        sigma=args.sigma,
        tile=args.tile,
        tile_overlap=args.tile_overlap,
        chunk=args.chunk,
        chunk_overlap=args.chunk_overlap,
        backend=args.backend,
    )


def default_model() -> str:
    """The model restored when --model is not given: the bundled default of the video architecture."""
    return next(arch.default_model for arch in ARCHITECTURES if arch.kind == "video")


@dataclass
class LoadedModel:
    """A ready model plus how to run it."""

    model: torch.nn.Module
    arch: str
    scale: int
    device: torch.device
    dtype: torch.dtype
    restorer: Restorer
    temporal: tuple[int, int] | None = None
    """(chunk, overlap) that ``restorer`` runs a video model with (chunk 0: whole clip at once); None: per frame."""


def load(options: Options) -> LoadedModel:
    """Resolve the options and load the model once for the whole batch; fails early with the fix in the message."""
    s = resolve(CALLER, options)
    try:
        model = with_backend(
            default_cache().get(s.model_path, device=s.device, dtype=s.dtype, attention=s.attention),
            s.backend,
            frames=s.chunk,
        )
    except WindowTooSmall as exc:
        raise fail(CALLER, str(exc)) from None
    info = model_info(model, CALLER)
    sigma = check_model(s, info)
    log.info(
        "model %s (%s %s, x%d) on %s/%s (%s), attention %s",
        s.model_path.name,
        info.arch,
        info.task,
        info.scale,
        s.device,
        s.dtype,
        s.backend,
        s.attention.spec,
    )
    temporal: tuple[int, int] | None = None
    if info.kind == "video":
        assert s.chunk is not None  # a video architecture always resolves a chunk length
        restorer = _video_restorer(
            model, s.device, s.dtype, s.chunk, s.chunk_overlap, s.tile, s.tile_overlap, sigma, info.needs_sigma
        )
        temporal = (s.chunk, s.chunk_overlap)
    else:
        restorer = _image_restorer(model, s.device, s.dtype, tile=s.tile, tile_overlap=s.tile_overlap)
    return LoadedModel(model, info.arch, info.scale, s.device, s.dtype, restorer, temporal)


def _video_restorer(
    model: torch.nn.Module,
    device: torch.device,
    dtype: torch.dtype,
    chunk: int,
    chunk_overlap: int,
    tile: tuple[int, int] | None,
    tile_overlap: int,
    sigma: float | None,
    needs_sigma: bool = False,
) -> Restorer:
    """Without a sigma, a non-blind denoiser's noise level is estimated per input from its first frames (the command
    line sees one input as one scene)."""

    def run(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        staged: Iterator[torch.Tensor] = (
            torch.from_numpy(f).to(device=device, dtype=dtype, non_blocking=True) for f in frames
        )
        level = sigma
        if needs_sigma and level is None:
            head = list(itertools.islice(staged, SIGMA_FRAMES))
            if not head:
                return
            level = estimate_sigma(torch.stack(head))
            log.info(
                "no --sigma given: estimated noise level %.2f (0-255) from the first %d frame(s)", level, len(head)
            )
            staged = itertools.chain(head, staged)
        with torch.inference_mode():
            out = iter(
                restore_video(
                    model,
                    staged,
                    chunk=chunk,
                    chunk_overlap=chunk_overlap,
                    tile=tile,  # (w, h) like the CLI's WxH
                    tile_overlap=tile_overlap,
                    sigma=level,
                )
            )
        while True:
            with torch.inference_mode():
                y = next(out, None)
                if y is None:
                    return
                arr = y.to("cpu", torch.float32).numpy()
            yield arr

    return run


def _image_restorer(
    model: torch.nn.Module,
    device: torch.device,
    dtype: torch.dtype,
    *,
    tile: tuple[int, int] | None,
    tile_overlap: int,
) -> Restorer:
    def run(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for f in frames:
            with torch.inference_mode():
                y = restore_image(
                    model, torch.from_numpy(f).to(device=device, dtype=dtype), tile=tile, tile_overlap=tile_overlap
                )
                arr = y.to("cpu", torch.float32).numpy()
            yield arr

    return run
