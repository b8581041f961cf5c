"""The nystra.* filters: RVRT (video, chunked), SwinIR and Uformer (frame by frame).

The C shim calls these functions with VapourSynth-converted keywords (clip as vs.VideoNode, data as str or bytes,
int[] as list) and hands the returned clip back; they are plain Python functions too
(``from vsnystra.vs.filters import RVRT``). Every argument is checked before the model is loaded, errors read
``nystra.<Filter>: <what> ; <fix>`` and are vs.Error (and ValueError) instances.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import vapoursynth as vs
from torch import nn

from vsnystra.archs.base import ModelInfo, model_info
from vsnystra.archs.registry import architecture
from vsnystra.attention.specs import AttentionSpec
from vsnystra.runtime.cache import AttentionSetting, default_cache
from vsnystra.runtime.device import compute_dtype, resolve_device, run_on_device, run_with_oom_retry
from vsnystra.vs import validate as V
from vsnystra.vs.frames import frame_to_tensor, frames_to_tensor, tensor_to_frame
from vsnystra.vs.temporal import TemporalRestorer

log = logging.getLogger(__name__)

__all__ = ["RVRT", "SwinIR", "Uformer"]

DEFAULT_TILE_OVERLAP = 32
DEFAULT_CHUNK = 16
DEFAULT_CHUNK_OVERLAP = 2
DEFAULT_CACHE_CHUNKS = 2  # the two overlapping chunks of in-order playback; memory = this × chunk × output frame
DEFAULT_SIGMA = 12.0


@dataclass(frozen=True)
class Common:
    """Validated arguments shared by the three filters."""

    func: str
    half: bool
    model_path: Path
    attention_name: str
    spec: AttentionSpec
    window: int | tuple[int, ...] | None
    device: torch.device
    dtype: torch.dtype
    tile: tuple[int, int] | None  # (w, h)


def _common(
    func: str,
    clip: Any,
    model: Any,
    attention: Any,
    landmarks: Any,
    iters: Any,
    window: Any,
    device: Any,
    tile: Any,
) -> Common:
    half = V.check_clip(func, clip, allow_gray=func != "RVRT")
    win: int | tuple[int, ...] | None = None
    if window is not None:
        if func == "RVRT":
            sizes = V.check_ints(func, "window", window, lengths=(2, 3), hint=" ([h, w] or [t, h, w], e.g. [64, 64])")
            win = (2, *sizes) if len(sizes) == 2 else sizes
        else:
            win = V.check_int(func, "window", window, minimum=1)
    d = architecture(func).nystra_defaults(enlarged_window=win is not None)
    name, spec = V.attention_spec(
        func, attention, landmarks, iters, default_landmarks=d.landmarks, default_iters=d.iters, threshold=d.threshold
    )
    tile_wh: tuple[int, int] | None = None
    if tile is not None:
        sizes = V.check_ints(func, "tile", tile, lengths=(1, 2), minimum=0, hint=" ([w, h] in input pixels)")
        tw, th = (sizes[0], sizes[0]) if len(sizes) == 1 else sizes
        if (tw == 0) != (th == 0):
            raise V.fail(func, f"tile {list(sizes)} mixes 0 (no tiling) and a size; use [0, 0] or two sizes")
        if tw and (tw < 16 or th < 16):
            raise V.fail(func, f"tile {list(sizes)} is too small; use at least [16, 16] (or omit tile)")
        if tw:
            tile_wh = (tw, th)
    try:
        dev = resolve_device(V.as_text(func, "device", device) or "auto", caller=f"nystra.{func}")
    except ValueError as exc:
        raise V.FilterError(str(exc)) from exc
    path = V.resolve_model_path(func, model)
    return Common(func, half, path, name, spec, win, dev, compute_dtype(dev, half, func), tile_wh)


def _load(c: Common, *, attention: AttentionSetting) -> tuple[nn.Module, ModelInfo]:
    """Load (or reuse) the model and check that it belongs to this filter and fits the clip."""
    try:
        net = default_cache().get(c.model_path, device=c.device, dtype=c.dtype, attention=attention)
    except (FileNotFoundError, IsADirectoryError, KeyError, ValueError, TypeError) as exc:
        raise V.fail(c.func, f"cannot use model {str(c.model_path)!r}: {exc}") from exc
    info = model_info(net, f"nystra.{c.func}")
    if info.arch != architecture(c.func).name:
        other = architecture(info.arch).filter_name
        raise V.fail(c.func, f"model {c.model_path.name!r} is a {other} checkpoint; call nystra.{other} with it")
    return net, info


def _check_channels(c: Common, clip: vs.VideoNode, info: ModelInfo) -> None:
    want = int(info.in_channels)
    have = clip.format.num_planes
    if want != have:
        target = "vs.RGBH" if c.half else "vs.RGBS"
        gray = "vs.GRAYH" if c.half else "vs.GRAYS"
        fix = f"core.resize.Point(clip, format={target})" if want == 3 else "core.std.ShufflePlanes(clip, 0, vs.GRAY)"
        raise V.fail(
            c.func,
            f"model {c.model_path.name!r} expects {want} channel(s), the clip has {have} ({clip.format.name}); "
            f"convert with {fix}" + (f" to get {gray}" if want == 1 else ""),
        )


def _output_clip(clip: vs.VideoNode, scale: int, out_channels: int) -> vs.VideoNode:
    """A blank clip of the output size/format; its frames are the templates the results are written into."""
    fmt = clip.format
    if out_channels != fmt.num_planes:
        family = vs.RGB if out_channels == 3 else vs.GRAY
        fmt = vs.core.query_video_format(family, vs.FLOAT, fmt.bits_per_sample, 0, 0)
    return vs.core.std.BlankClip(clip, width=clip.width * scale, height=clip.height * scale, format=fmt.id, keep=True)


def _props(src: vs.VideoFrame, c: Common, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    props = dict(src.props)
    props["nystra_model"] = c.model_path.name
    props["nystra_attention"] = c.attention_name
    props["nystra_device"] = str(c.device)
    if extra:
        props.update(extra)
    return props


def _wire(
    clip: vs.VideoNode,
    out: vs.VideoNode,
    make: Callable[[int, vs.VideoFrame, vs.VideoFrame], vs.VideoFrame],
    func: str = "filter",
) -> vs.VideoNode:
    """ModifyFrame over (blank output, source): the callback gets the template and source frame n.

    Exceptions are logged with their traceback (stderr) and re-raised short: VapourSynth truncates long frame
    errors, which would hide the actual message behind torch's call stack.
    """

    def selector(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        try:
            return make(n, f[0], f[1])
        except V.FilterError:
            raise
        except Exception as exc:
            log.error("nystra.%s: frame %d failed", func, n, exc_info=True)
            raise V.FilterError(f"nystra.{func}: frame {n} failed: {type(exc).__name__}: {exc}") from None

    return vs.core.std.ModifyFrame(out, [out, clip], selector)


def _image_filter(
    func: str,
    clip: Any,
    model: Any,
    attention: Any,
    landmarks: Any,
    iters: Any,
    window: Any,
    device: Any,
    tile: Any,
    tile_overlap: Any,
) -> vs.VideoNode:
    c = _common(func, clip, model, attention, landmarks, iters, window, device, tile)
    overlap = DEFAULT_TILE_OVERLAP
    if tile_overlap is not None:
        overlap = V.check_int(func, "tile_overlap", tile_overlap, minimum=0)
        if c.tile is not None and 2 * overlap >= min(c.tile):
            raise V.fail(func, f"tile_overlap {overlap} must be less than half the tile {list(c.tile)}")
    net, info = _load(c, attention=AttentionSetting(spec=c.spec, window=c.window))
    _check_channels(c, clip, info)
    out = _output_clip(clip, int(info.scale), int(info.out_channels))
    from vsnystra.runtime.image import restore_image

    size = (clip.width, clip.height)

    def run(x: torch.Tensor, tile_wh: tuple[int, int] | None) -> torch.Tensor:
        with torch.no_grad():
            return restore_image(net, x, **_image_tile_kwargs(tile_wh, overlap))

    def make(n: int, template: vs.VideoFrame, src: vs.VideoFrame) -> vs.VideoFrame:
        x = frame_to_tensor(src, device=c.device, dtype=c.dtype)
        y = run_on_device(
            c.device,
            lambda: run_with_oom_retry(
                lambda t: run(x, t), tile=c.tile, size=size, device=c.device, caller=f"nystra.{func}"
            ),
        )
        return tensor_to_frame(y, template, props=_props(src, c))

    return _wire(clip, out, make, func)


def _image_tile_kwargs(tile_wh: tuple[int, int] | None, overlap: int) -> dict[str, Any]:
    """restore_image takes tile as (w, h) in input pixels, like the filters."""
    if tile_wh is None:
        return {"tile": None}
    return {"tile": tile_wh, "tile_overlap": overlap}


def SwinIR(
    clip: vs.VideoNode,
    model: str | bytes | None = None,
    attention: str | bytes | None = None,
    landmarks: int | None = None,
    iters: int | None = None,
    window: int | None = None,
    device: str | bytes | None = None,
    tile: Sequence[int] | None = None,
    tile_overlap: int | None = None,
) -> vs.VideoNode:
    """SwinIR frame by frame (super-resolution, denoising, JPEG artefact removal, by checkpoint).

    clip: RGBS/RGBH (GRAYS/GRAYH for 1-channel checkpoints). model: checkpoint path or zoo name (default: the
    bundled SwinIR). attention: "auto" (default), "nystra" or "exact"; landmarks (16), iters (2); window: enlarged
    attention window (e.g. 32). device: "auto", "cpu", "cuda", "cuda:N". tile: [w, h] input pixels with
    tile_overlap (32) px cross-faded; on CUDA out of memory the frame is retried with smaller tiles.
    """
    return _image_filter("SwinIR", clip, model, attention, landmarks, iters, window, device, tile, tile_overlap)


def Uformer(
    clip: vs.VideoNode,
    model: str | bytes | None = None,
    attention: str | bytes | None = None,
    landmarks: int | None = None,
    iters: int | None = None,
    window: int | None = None,
    device: str | bytes | None = None,
    tile: Sequence[int] | None = None,
    tile_overlap: int | None = None,
) -> vs.VideoNode:
    """Uformer frame by frame (denoising or deblurring, by checkpoint).

    Arguments as for SwinIR; Nystra defaults landmarks 32, iters 8 at the trained window (paper: 32, 6 at ``window``).
    """
    return _image_filter("Uformer", clip, model, attention, landmarks, iters, window, device, tile, tile_overlap)


def RVRT(
    clip: vs.VideoNode,
    model: str | bytes | None = None,
    attention: str | bytes | None = None,
    landmarks: int | None = None,
    iters: int | None = None,
    window: Sequence[int] | None = None,
    device: str | bytes | None = None,
    tile: Sequence[int] | None = None,
    tile_overlap: Sequence[int] | None = None,
    chunk: int | None = None,
    chunk_overlap: int | None = None,
    sigma: float | None = None,
    cache_chunks: int | None = None,
) -> vs.VideoNode:
    """RVRT over chunks of frames (video SR, deblurring, denoising, by checkpoint), bounded by scene cuts.

    clip: RGBS (fp32) or RGBH (fp16 on CUDA, fp32 on CPU), constant format and size, sides > 32 px (>= 132 px for
    deblurring/denoising). model: checkpoint path or zoo name (default: the bundled RVRT). attention: "auto"
    (default: PnP-Nystra where it pays, else exact), "nystra" or "exact"; landmarks/iters tune Nystra; window:
    [h, w] or [t, h, w] enlarges the attention window. tile: [w, h] input pixels (multiples of 8), tile_overlap:
    [px]. chunk (16, even) frames per chunk, chunk_overlap (2) frames shared by neighbouring chunks and averaged.
    sigma: noise level (0-255) for non-blind denoisers (default 12). cache_chunks (2): chunk results kept in
    memory; memory ~ cache_chunks x chunk x output frame size. Scene cuts (_SceneChangePrev/_SceneChangeNext)
    end chunks, so shots never mix; frames may be requested in any order and from any number of threads.
    """
    node, _ = rvrt_with_restorer(
        clip,
        model,
        attention,
        landmarks,
        iters,
        window,
        device,
        tile,
        tile_overlap,
        chunk,
        chunk_overlap,
        sigma,
        cache_chunks,
    )
    return node


def rvrt_with_restorer(
    clip: Any,
    model: Any = None,
    attention: Any = None,
    landmarks: Any = None,
    iters: Any = None,
    window: Any = None,
    device: Any = None,
    tile: Any = None,
    tile_overlap: Any = None,
    chunk: Any = None,
    chunk_overlap: Any = None,
    sigma: Any = None,
    cache_chunks: Any = None,
) -> tuple[vs.VideoNode, TemporalRestorer]:
    """RVRT's implementation; also returns the chunk scheduler (tests and diagnostics read its counters)."""
    func = "RVRT"
    c = _common(func, clip, model, attention, landmarks, iters, window, device, tile)
    if c.tile is not None and (c.tile[0] % 8 or c.tile[1] % 8):
        raise V.fail(func, f"tile {list(c.tile)} must be multiples of 8 (RVRT's window), e.g. [256, 256]")
    t_overlap: int | None = None
    if tile_overlap is not None:
        ov = V.check_ints(func, "tile_overlap", tile_overlap, lengths=(1, 2), minimum=0, hint=" (pixels, e.g. [20])")
        if len(set(ov)) != 1:
            raise V.fail(func, f"tile_overlap {list(ov)} must be one value for both sides (RVRT's rule), e.g. [20]")
        t_overlap = ov[0]
        if c.tile is not None and 2 * t_overlap >= min(c.tile):
            raise V.fail(func, f"tile_overlap {list(ov)} must be less than half the tile {list(c.tile)}")
    n_chunk = DEFAULT_CHUNK if chunk is None else V.check_int(func, "chunk", chunk, minimum=2)
    if n_chunk % 2:
        raise V.fail(func, f"chunk must be even (RVRT processes clips of 2 frames), got {n_chunk}; use {n_chunk + 1}")
    n_overlap = (
        DEFAULT_CHUNK_OVERLAP if chunk_overlap is None else V.check_int(func, "chunk_overlap", chunk_overlap, minimum=0)
    )
    if n_overlap >= n_chunk:
        raise V.fail(func, f"chunk_overlap ({n_overlap}) must be smaller than chunk ({n_chunk})")
    capacity = (
        DEFAULT_CACHE_CHUNKS if cache_chunks is None else V.check_int(func, "cache_chunks", cache_chunks, minimum=1)
    )
    sig = None if sigma is None else V.check_sigma(func, sigma)
    if min(clip.width, clip.height) <= 32:
        raise V.fail(func, f"frames must be larger than 32x32 (SpyNet), got {clip.width}x{clip.height}; upscale first")

    net, info = _load(c, attention=AttentionSetting(spec=c.spec, window=c.window))
    if info.needs_sigma:
        sig = DEFAULT_SIGMA if sig is None else sig
    elif sig is not None:
        raise V.fail(func, f"sigma only applies to non-blind denoising models; {c.model_path.name!r} takes none")
    if info.scale == 1 and min(clip.width, clip.height) < 132:
        raise V.fail(
            func,
            f"{info.task} models need frames of at least 132x132 (their flows run at 1/4 size), got "
            f"{clip.width}x{clip.height}; pad first, e.g. core.std.AddBorders",
        )
    out = _output_clip(clip, int(info.scale), 3)
    from vsnystra.runtime.video import restore_chunk

    size = (clip.width, clip.height)

    def run_chunk(frames: torch.Tensor) -> torch.Tensor:
        def attempt(tile_wh: tuple[int, int] | None) -> torch.Tensor:
            with torch.no_grad():
                y = restore_chunk(net, frames, sigma=sig, **_video_tile_kwargs(tile_wh, t_overlap))
            return y.to("cpu")

        return run_on_device(
            c.device,
            lambda: run_with_oom_retry(attempt, tile=c.tile, size=size, device=c.device, caller="nystra.RVRT"),
        )

    def load(frames: Sequence[vs.VideoFrame]) -> torch.Tensor:
        return frames_to_tensor(frames, device=c.device, dtype=c.dtype)

    restorer = TemporalRestorer(
        clip, runner=run_chunk, loader=load, chunk=n_chunk, overlap=n_overlap, capacity=capacity
    )

    def make(n: int, template: vs.VideoFrame, src: vs.VideoFrame) -> vs.VideoFrame:
        y = restorer.frame(n)
        return tensor_to_frame(y, template, props=_props(src, c))

    return _wire(clip, out, make, func), restorer


def _video_tile_kwargs(tile_wh: tuple[int, int] | None, overlap: int | None) -> dict[str, Any]:
    """restore_chunk takes tile as (w, h) in input pixels and one tile_overlap for both sides."""
    if tile_wh is None:
        return {"tile": None}
    kw: dict[str, Any] = {"tile": tile_wh}
    if overlap is not None:
        kw["tile_overlap"] = overlap
    return kw
