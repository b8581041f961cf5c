"""The nystra.* filters: RVRT (video, chunked), SwinIR and Uformer (frame by frame).

The C shim calls these functions with VapourSynth-converted keywords (clip as vs.VideoNode, data as str or bytes,
int[] as list) and hands the returned clip back; they are plain Python functions too
(``from vsnystra.vs.filters import RVRT``). Every argument is checked before the model is loaded, by the same
settings resolver as the command line (:mod:`vsnystra.runtime.settings`); errors read ``nystra.<Filter>: <what> ;
<fix>`` and are vs.Error (and ValueError) instances.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
import vapoursynth as vs
from torch import nn

from vsnystra.archs.base import ModelInfo, model_info
from vsnystra.archs.descriptor import Architecture
from vsnystra.archs.registry import architecture
from vsnystra.runtime.cache import default_cache
from vsnystra.runtime.device import run_on_device, run_with_oom_retry
from vsnystra.runtime.image import restore_image
from vsnystra.runtime.settings import Options, Settings, check_int, check_model, resolve
from vsnystra.runtime.video import restore_chunk
from vsnystra.vs import validate as V
from vsnystra.vs.frames import frame_to_tensor, frames_to_tensor, tensor_to_frame
from vsnystra.vs.temporal import TemporalRestorer

log = logging.getLogger(__name__)

__all__ = ["RVRT", "SwinIR", "Uformer"]

DEFAULT_CACHE_CHUNKS = 2  # the two overlapping chunks of in-order playback; memory = this × chunk × output frame
FrameRenderer = Callable[[int, vs.VideoFrame, vs.VideoFrame], vs.VideoFrame]  # (n, template, source) -> output


def _settings(arch: Architecture, clip: Any, options: Options) -> Settings:
    """The clip checks of this filter, then the shared options through the settings resolver."""
    half = V.check_clip(arch.filter_name, clip, allow_gray=arch.gray)
    with V.filter_errors():
        return resolve(f"nystra.{arch.filter_name}", dataclasses.replace(options, half=half), arch=arch)


def _load(s: Settings, func: str) -> tuple[nn.Module, ModelInfo, float | None]:
    """Load (or reuse) the model, check that it belongs to this filter; returns it, its info and its sigma."""
    try:
        net = default_cache().get(s.model_path, device=s.device, dtype=s.dtype, attention=s.attention)
    except (FileNotFoundError, IsADirectoryError, KeyError, ValueError, TypeError) as exc:
        raise V.fail(func, f"cannot use model {str(s.model_path)!r}: {exc}") from exc
    info = model_info(net, f"nystra.{func}")
    with V.filter_errors():
        sigma = check_model(s, info)
    return net, info, sigma


def _check_channels(func: str, s: Settings, clip: vs.VideoNode, info: ModelInfo) -> None:
    want = int(info.in_channels)
    have = clip.format.num_planes
    if want != have:
        half = clip.format.bits_per_sample == 16
        target = "vs.RGBH" if half else "vs.RGBS"
        gray = "vs.GRAYH" if half else "vs.GRAYS"
        fix = f"core.resize.Point(clip, format={target})" if want == 3 else "core.std.ShufflePlanes(clip, 0, vs.GRAY)"
        raise V.fail(
            func,
            f"model {s.model_path.name!r} expects {want} channel(s), the clip has {have} ({clip.format.name}); "
            f"convert with {fix}" + (f" to get {gray}" if want == 1 else ""),
        )


def _output_clip(clip: vs.VideoNode, scale: int, out_channels: int) -> vs.VideoNode:
    """A blank clip of the output size/format; its frames are the templates the results are written into."""
    fmt = clip.format
    if out_channels != fmt.num_planes:
        family = vs.RGB if out_channels == 3 else vs.GRAY
        fmt = vs.core.query_video_format(family, vs.FLOAT, fmt.bits_per_sample, 0, 0)
    return vs.core.std.BlankClip(clip, width=clip.width * scale, height=clip.height * scale, format=fmt.id, keep=True)


def _props(src: vs.VideoFrame, s: Settings) -> dict[str, Any]:
    props = dict(src.props)
    props["nystra_model"] = s.model_path.name
    props["nystra_attention"] = s.attention_name
    props["nystra_device"] = str(s.device)
    return props


def modify_frames(clip: vs.VideoNode, out: vs.VideoNode, render: FrameRenderer, func: str = "filter") -> vs.VideoNode:
    """ModifyFrame over (blank output, source): ``render`` gets frame n's template and source frame.

    Exceptions are logged with their traceback (stderr) and re-raised short: VapourSynth truncates long frame
    errors, which would hide the actual message behind torch's call stack.
    """

    def selector(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        try:
            return render(n, f[0], f[1])
        except V.FilterError:
            raise
        except Exception as exc:
            log.error("nystra.%s: frame %d failed", func, n, exc_info=True)
            raise V.FilterError(f"nystra.{func}: frame {n} failed: {type(exc).__name__}: {exc}") from None

    return vs.core.std.ModifyFrame(out, [out, clip], selector)


def _image_filter(arch: Architecture, clip: Any, options: Options) -> vs.VideoNode:
    func = arch.filter_name
    s = _settings(arch, clip, options)
    net, info, _ = _load(s, func)
    _check_channels(func, s, clip, info)
    out = _output_clip(clip, info.scale, info.out_channels)
    size = (clip.width, clip.height)

    def run(x: torch.Tensor, tile_wh: tuple[int, int] | None) -> torch.Tensor:
        with torch.no_grad():
            return restore_image(net, x, tile=tile_wh, tile_overlap=s.tile_overlap)

    def render(n: int, template: vs.VideoFrame, src: vs.VideoFrame) -> vs.VideoFrame:
        x = frame_to_tensor(src, device=s.device, dtype=s.dtype)
        y = run_on_device(
            s.device,
            lambda: run_with_oom_retry(lambda t: run(x, t), tile=s.tile, size=size, device=s.device, caller=s.caller),
        )
        return tensor_to_frame(y, template, props=_props(src, s))

    return modify_frames(clip, out, render, func)


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
    bundled SwinIR). attention: "auto" (default), "nystra" or "exact"; landmarks (16), iters (6; 2 at ``window``);
    window: enlarged attention window (e.g. 32). device: "auto", "cpu", "cuda", "cuda:N". tile: [w, h] input pixels
    with tile_overlap (32) px cross-faded; on CUDA out of memory the frame is retried with smaller tiles.
    """
    options = Options(model, attention, landmarks, iters, window, device, tile=tile, tile_overlap=tile_overlap)
    return _image_filter(architecture("swinir"), clip, options)


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
    options = Options(model, attention, landmarks, iters, window, device, tile=tile, tile_overlap=tile_overlap)
    return _image_filter(architecture("uformer"), clip, options)


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
    [px]. chunk (16, even) frames per chunk, chunk_overlap (2) frames shared by neighbouring chunks and averaged;
    a bundled model may carry its own (models/zoo.json "defaults"). sigma: noise level (0-255) for non-blind
    denoisers (default 12). cache_chunks (2): chunk results kept in memory; memory ~ cache_chunks x chunk x output
    frame size. Scene cuts (_SceneChangePrev/_SceneChangeNext) end chunks, so shots never mix; frames may be
    requested in any order and from any number of threads.
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
    model: object = None,
    attention: object = None,
    landmarks: object = None,
    iters: object = None,
    window: object = None,
    device: object = None,
    tile: object = None,
    tile_overlap: object = None,
    chunk: object = None,
    chunk_overlap: object = None,
    sigma: object = None,
    cache_chunks: object = None,
) -> tuple[vs.VideoNode, TemporalRestorer]:
    """RVRT's implementation; also returns the chunk scheduler (tests and diagnostics read its counters)."""
    arch = architecture("rvrt")
    func = arch.filter_name
    options = Options(
        model=model,
        attention=attention,
        landmarks=landmarks,
        iters=iters,
        window=window,
        device=device,
        sigma=sigma,
        tile=tile,
        tile_overlap=tile_overlap,
        chunk=chunk,
        chunk_overlap=chunk_overlap,
    )
    s = _settings(arch, clip, options)
    capacity = DEFAULT_CACHE_CHUNKS
    if cache_chunks is not None:
        with V.filter_errors():
            capacity = check_int(s.caller, "cache_chunks", cache_chunks, minimum=1)
    if min(clip.width, clip.height) <= 32:
        raise V.fail(func, f"frames must be larger than 32x32 (SpyNet), got {clip.width}x{clip.height}; upscale first")
    net, info, sigma = _load(s, func)
    if info.scale == 1 and min(clip.width, clip.height) < 132:
        raise V.fail(
            func,
            f"{info.task} models need frames of at least 132x132 (their flows run at 1/4 size), got "
            f"{clip.width}x{clip.height}; pad first, e.g. core.std.AddBorders",
        )
    out = _output_clip(clip, info.scale, 3)
    assert s.chunk is not None  # a video architecture always resolves a chunk length
    restorer = TemporalRestorer(
        clip,
        runner=_chunk_runner(net, s, sigma, (clip.width, clip.height)),
        loader=lambda frames: frames_to_tensor(frames, device=s.device, dtype=s.dtype),
        chunk=s.chunk,
        overlap=s.chunk_overlap,
        capacity=capacity,
    )

    def render(n: int, template: vs.VideoFrame, src: vs.VideoFrame) -> vs.VideoFrame:
        return tensor_to_frame(restorer.frame(n), template, props=_props(src, s))

    return modify_frames(clip, out, render, func), restorer


def _chunk_runner(
    net: nn.Module, s: Settings, sigma: float | None, size: tuple[int, int]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Restore one chunk of frames on the device's inference thread, retrying smaller tiles on CUDA out of memory."""

    def run_chunk(frames: torch.Tensor) -> torch.Tensor:
        def attempt(tile_wh: tuple[int, int] | None) -> torch.Tensor:
            with torch.no_grad():
                y = restore_chunk(net, frames, sigma=sigma, tile=tile_wh, tile_overlap=s.tile_overlap)
            return y.to("cpu")

        return run_on_device(
            s.device, lambda: run_with_oom_retry(attempt, tile=s.tile, size=size, device=s.device, caller=s.caller)
        )

    return run_chunk
