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
from vsnystra.runtime.noise import estimate_sigma
from vsnystra.runtime.openvino import with_backend
from vsnystra.runtime.settings import Options, Settings, WindowTooSmall, check_int, check_model, resolve
from vsnystra.runtime.video import restore_chunk
from vsnystra.vs import formats
from vsnystra.vs import validate as V
from vsnystra.vs.formats import Conversion
from vsnystra.vs.frames import frame_to_tensor, frames_to_tensor, tensor_to_frame
from vsnystra.vs.temporal import TemporalRestorer

log = logging.getLogger(__name__)

__all__ = ["RVRT", "SwinIR", "Uformer"]

SIGMA_FRAMES = 8  # frames of a scene its noise estimate reads (as the command line's)
DEFAULT_CACHE_CHUNKS = 2  # the two overlapping chunks of in-order playback; memory = this × chunk × output frame
FrameRenderer = Callable[[int, vs.VideoFrame, vs.VideoFrame], vs.VideoFrame]  # (n, template, source) -> output


def _settings(arch: Architecture, clip: Any, options: Options) -> Settings:
    """The clip checks of this filter, then the shared options through the settings resolver.

    An interlaced first frame is refused here (cheaply, before the model loads); later frames when they are read.
    """
    half = V.check_clip(arch.filter_name, clip)
    with V.filter_errors():
        s = resolve(f"nystra.{arch.filter_name}", dataclasses.replace(options, half=half), arch=arch)
    if not s.progressive:
        V.check_progressive(arch.filter_name, clip.get_frame(0).props, 0)
    return s


def _load(s: Settings, func: str) -> tuple[nn.Module, ModelInfo, float | None]:
    """Load (or reuse) the model, check that it belongs to this filter; returns it, its info and its sigma."""
    try:
        net = default_cache().get(s.model_path, device=s.device, dtype=s.dtype, attention=s.attention)
        net = with_backend(net, s.backend, frames=s.chunk)
    except WindowTooSmall as exc:
        raise V.fail(func, str(exc)) from None
    except (FileNotFoundError, IsADirectoryError, KeyError, ValueError, TypeError) as exc:
        raise V.fail(func, f"cannot use model {str(s.model_path)!r}: {exc}") from exc
    info = model_info(net, f"nystra.{func}")
    with V.filter_errors():
        sigma = check_model(s, info)
    return net, info, sigma


def _fp32(s: Settings) -> Callable[[], nn.Module]:
    """The fp32 twin of the filter's model (from the model cache) for tiles whose half-precision output overflowed."""
    return lambda: default_cache().get(s.model_path, device=s.device, dtype=torch.float32, attention=s.attention)


def _check_channels(func: str, s: Settings, clip: vs.VideoNode, info: ModelInfo) -> None:
    """Colour models take every clip (grey is restored as RGB); grey models take grey clips only."""
    if info.in_channels == 1 and clip.format.color_family != vs.GRAY:
        raise V.fail(
            func,
            f"model {s.model_path.name!r} expects 1 channel(s), the clip has {clip.format.num_planes} "
            f"({clip.format.name}); convert with core.std.ShufflePlanes(clip, 0, vs.GRAY) (the luma of YUV)",
        )


def _convert(
    func: str, s: Settings, clip: vs.VideoNode, info: ModelInfo, out_format: vs.VideoFormat | None
) -> Conversion:
    """Check the clip against the model and plan the conversions to the model's format and back."""
    _check_channels(func, s, clip, info)
    target = out_format or clip.format
    V.check_output_size(func, target, clip.width * info.scale, clip.height * info.scale)
    return formats.plan(clip, info.in_channels, out_format)


def _finish(
    clip: vs.VideoNode, restored: vs.VideoNode, conv: Conversion, out_format: vs.VideoFormat | None
) -> vs.VideoNode:
    """The restored clip in the output format, carrying the input frames' properties."""
    if conv.identity_out:
        return restored
    keep_colour = out_format is None or out_format.id == clip.format.id
    return formats.with_input_props(conv.from_model(restored), clip, restored, keep_colour=keep_colour)


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


def _image_filter(arch: Architecture, source: Any, options: Options, format: object) -> vs.VideoNode:
    func = arch.filter_name
    s = _settings(arch, source, options)
    out_format = V.check_format(func, format)
    net, info, _ = _load(s, func)
    conv = _convert(func, s, source, info, out_format)
    clip = conv.to_model(source if s.progressive else V.refuse_interlaced(func, source))
    out = _output_clip(clip, info.scale, info.out_channels)
    size = (clip.width, clip.height)

    def run(x: torch.Tensor, tile_wh: tuple[int, int] | None) -> torch.Tensor:
        with torch.no_grad():
            return restore_image(net, x, tile=tile_wh, tile_overlap=s.tile_overlap, fp32_model=_fp32(s))

    def render(n: int, template: vs.VideoFrame, src: vs.VideoFrame) -> vs.VideoFrame:
        x = frame_to_tensor(src, device=s.device, dtype=s.dtype)
        y = run_on_device(
            s.device,
            lambda: run_with_oom_retry(lambda t: run(x, t), tile=s.tile, size=size, device=s.device, caller=s.caller),
        )
        return tensor_to_frame(y, template, props=_props(src, s))

    return _finish(source, modify_frames(clip, out, render, func), conv, out_format)


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
    format: int | None = None,
    progressive: int | None = None,
    backend: str | bytes | None = None,
) -> vs.VideoNode:
    """SwinIR frame by frame (super-resolution, denoising, JPEG artefact removal, by checkpoint).

    clip: any constant format (RGB, YUV, grey; integer 8-16 bit, half, single), converted with its frame properties
    for the model and back (vsnystra.vs.formats; grey checkpoints take grey clips); format: output format id
    (default: the input's) at the model's output size. model: checkpoint path or zoo name (default: the
    bundled SwinIR). attention: "auto" (default), "nystra" or "exact"; landmarks (16), iters (6; 2 at ``window``);
    window: enlarged attention window (e.g. 32). device: "auto", "cpu", "cuda", "cuda:N" or "openvino" (the CPU
    through OpenVINO, exact attention). backend: "auto" (default, or $VSNYSTRA_BACKEND: OpenVINO on the CPU where
    benchmarks/backends.py measured it faster for this model, else torch), "torch" or "openvino". tile: [w, h]
    input pixels with tile_overlap (32) px cross-faded; on CUDA out of memory the frame is retried with smaller tiles.
    Interlaced frames (_FieldBased 1 or 2) are refused (deinterlace first, e.g. with bwdif or QTGMC) unless
    progressive=1, which restores them as they are.
    """
    options = Options(
        model,
        attention,
        landmarks,
        iters,
        window,
        device,
        tile=tile,
        tile_overlap=tile_overlap,
        progressive=progressive,
        backend=backend,
    )
    return _image_filter(architecture("swinir"), clip, options, format)


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
    format: int | None = None,
    progressive: int | None = None,
    backend: str | bytes | None = None,
) -> vs.VideoNode:
    """Uformer frame by frame (denoising or deblurring, by checkpoint).

    Arguments as for SwinIR; Nystra defaults landmarks 32, iters 8 at the trained window (paper: 32, 6 at ``window``).
    """
    options = Options(
        model,
        attention,
        landmarks,
        iters,
        window,
        device,
        tile=tile,
        tile_overlap=tile_overlap,
        progressive=progressive,
        backend=backend,
    )
    return _image_filter(architecture("uformer"), clip, options, format)


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
    format: int | None = None,
    progressive: int | None = None,
    backend: str | bytes | None = None,
) -> vs.VideoNode:
    """RVRT over chunks of frames (video SR, deblurring, denoising, by checkpoint), bounded by scene cuts.

    clip: any constant format and size from 16x16 (RGB, YUV, grey; converted for the model and back with the frame
    properties; half-float clips run in half precision on CUDA); frames smaller than the flows need (33 px, 129 px
    for deblurring/denoising) are mirror-padded and cropped back. format: output format id (default: the input's).
    model: checkpoint path or zoo name (default: the bundled RVRT). attention: "auto"
    (default: PnP-Nystra where it pays, else exact), "nystra" or "exact"; landmarks/iters tune Nystra; window:
    [h, w] or [t, h, w] enlarges the attention window. tile: [w, h] input pixels (multiples of 8), tile_overlap:
    [px]. chunk (16, even) frames per chunk, chunk_overlap (2) frames shared by neighbouring chunks and averaged;
    a bundled model may carry its own (models/zoo.json "defaults"). sigma: noise level (0-255) for non-blind
    denoisers; without it the level is estimated per scene from its first 8 frames (vsnystra.runtime.noise), logged
    and written to the frame property nystra_sigma (as is a given sigma). cache_chunks (2): chunk results kept in
    memory; memory ~ cache_chunks x chunk x output frame size. Scene cuts (_SceneChangePrev/_SceneChangeNext) end
    chunks, so shots never mix; frames may be requested in any order and from any number of threads. progressive:
    as for SwinIR (interlaced frames are refused unless it is 1). backend: "auto" (default: OpenVINO on CPUs where
    benchmarks/backends.py measured it faster, else torch), "torch" or "openvino"; OpenVINO compiles one graph per
    chunk length and frame (tile) size on first use (minutes; kept on disk) and runs shorter chunks with torch.
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
        format,
        progressive,
        backend,
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
    format: object = None,
    progressive: object = None,
    backend: object = None,
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
        progressive=progressive,
        backend=backend,
    )
    source = clip
    s = _settings(arch, source, options)
    out_format = V.check_format(func, format)
    capacity = DEFAULT_CACHE_CHUNKS
    if cache_chunks is not None:
        with V.filter_errors():
            capacity = check_int(s.caller, "cache_chunks", cache_chunks, minimum=1)
    net, info, sigma = _load(s, func)
    conv = _convert(func, s, source, info, out_format)
    clip = conv.to_model(source if s.progressive else V.refuse_interlaced(func, source))
    out = _output_clip(clip, info.scale, 3)
    assert s.chunk is not None  # a video architecture always resolves a chunk length
    restorer = TemporalRestorer(
        clip,
        runner=_chunk_runner(net, s, sigma, (clip.width, clip.height)),
        scene_sigma=estimate_sigma if info.needs_sigma and sigma is None else None,
        sigma_frames=SIGMA_FRAMES,
        loader=lambda frames: frames_to_tensor(frames, device=s.device, dtype=s.dtype),
        chunk=s.chunk,
        overlap=s.chunk_overlap,
        capacity=capacity,
    )

    def render(n: int, template: vs.VideoFrame, src: vs.VideoFrame) -> vs.VideoFrame:
        props = _props(src, s)
        if info.needs_sigma:
            level = restorer.sigma(n)
            props["nystra_sigma"] = level if level is not None else sigma
        return tensor_to_frame(restorer.frame(n), template, props=props)

    return _finish(source, modify_frames(clip, out, render, func), conv, out_format), restorer


def _chunk_runner(
    net: nn.Module, s: Settings, sigma: float | None, size: tuple[int, int]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Restore one chunk of frames on the device's inference thread, retrying smaller tiles on CUDA out of memory.

    ``sigma`` is the given noise level; the scheduler passes its scene's estimate when none was given.
    """

    def run_chunk(frames: torch.Tensor, level: float | None = sigma) -> torch.Tensor:
        def attempt(tile_wh: tuple[int, int] | None) -> torch.Tensor:
            with torch.no_grad():
                y = restore_chunk(
                    net, frames, sigma=level, tile=tile_wh, tile_overlap=s.tile_overlap, fp32_model=_fp32(s)
                )
            return y.to("cpu")

        return run_on_device(
            s.device, lambda: run_with_oom_retry(attempt, tile=s.tile, size=size, device=s.device, caller=s.caller)
        )

    return run_chunk
