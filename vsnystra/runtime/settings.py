"""One resolver for the options the filters and ``vsnystra restore`` share: one set of rules, one set of messages.

Both front ends hand the options over as the user gave them (:class:`Options`; the filters' keywords, the command
line's flags with the same names) and get back what the runtime needs (:class:`Settings`): the checkpoint, the
attention configuration, device, dtype, tiles and chunks. Errors are :class:`SettingsError` (a ValueError) whose
message is ``"<caller>: <what is wrong>; <fix>"``, the same words after the caller's name in both front ends.

Defaults, in order: what the user gave; the bundled model's own defaults (``models/zoo.json`` "defaults", set from
how it was trained); the architecture's (PnP-Nystra settings, default model); the runtime's
(``restore_image`` / ``restore_video`` keyword defaults). A non-blind denoiser without a sigma from the user or its
zoo entry estimates it from the clip (:mod:`vsnystra.runtime.noise`; each front end per scene it sees).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from vsnystra.archs.base import AttentionConfig, ModelInfo, Window
from vsnystra.archs.descriptor import GENERIC_NYSTRA, Architecture
from vsnystra.archs.registry import architecture, detect_file
from vsnystra.attention.specs import AttentionSpec, Exact, PnPNystra
from vsnystra.runtime import backends, image, video
from vsnystra.runtime.backends import BACKEND_CHOICES, default_backend
from vsnystra.runtime.device import compute_dtype, resolve_device
from vsnystra.zoo import bundled_defaults, resolve_model

log = logging.getLogger(__name__)

ATTENTION_CHOICES = ("nystra", "exact", "auto")
MAX_ITERS = 64  # more pseudo-inverse iterations only amplify rounding (and cost time)
MIN_TILE = 16
# The front ends scale the pseudo-inverse start per window and head (the research code scales it by the whole batch):
# each window's inverse converges on its own and a frame's output does not depend on what else shares its batch
# (tile size, frame size); it also converged much closer to exact attention on training crops (README, "Usage").
FRONT_END_PINV_INIT: Literal["matrix"] = "matrix"


class SettingsError(ValueError):
    """An option the user can fix; the message names the caller, the problem and the fix."""


def fail(caller: str, message: str) -> SettingsError:
    return SettingsError(f"{caller}: {message}")


# -- single values ----------------------------------------------------------------------------------------------
def as_text(caller: str, name: str, value: object) -> str | None:
    """A text option; VapourSynth hands ``data`` arguments over as bytes, so both str and bytes are accepted."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise fail(caller, f"{name} must be UTF-8 text, got undecodable bytes") from exc
    if isinstance(value, str):
        return value
    raise fail(caller, f"{name} must be a string, got {type(value).__name__} {value!r}")


def check_int(caller: str, name: str, value: object, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(caller, f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise fail(caller, f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise fail(caller, f"{name} must be <= {maximum}, got {value}")
    return int(value)


def check_ints(
    caller: str, name: str, value: object, *, lengths: Sequence[int], minimum: int = 1, hint: str = ""
) -> tuple[int, ...]:
    """A list of integers (a bare int counts as a one-element list)."""
    items = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(items, (list, tuple)):
        raise fail(caller, f"{name} must be a list of integers, got {type(value).__name__} {value!r}{hint}")
    if len(items) not in lengths:
        want = " or ".join(str(n) for n in lengths)
        raise fail(caller, f"{name} must have {want} value(s), got {len(items)}: {list(items)!r}{hint}")
    return tuple(check_int(caller, name, v, minimum=minimum) for v in items)


def check_flag(caller: str, name: str, value: object) -> bool:
    """A yes/no option: True/False, or 1/0 (VapourSynth passes booleans as int)."""
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise fail(caller, f"{name} must be 1 or 0 (True or False), got {value!r}")


def check_sigma(caller: str, sigma: object) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise fail(caller, f"sigma must be a number (noise level on the 0-255 scale), got {sigma!r}")
    value = float(sigma)
    if not math.isfinite(value) or value < 0 or value > 255:
        raise fail(caller, f"sigma must be between 0 and 255 (noise level on the 0-255 scale), got {value:g}")
    return value


# -- the options ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    """The shared options as the user gave them (None: not given). Values are checked by :func:`resolve`."""

    model: object = None
    attention: object = None
    landmarks: object = None
    iters: object = None
    window: object = None
    device: object = None
    half: bool = False
    sigma: object = None
    tile: object = None
    tile_overlap: object = None
    chunk: object = None
    chunk_overlap: object = None
    progressive: object = None  # restore interlaced (_FieldBased 1/2) frames as they are (--progressive)
    backend: object = None  # "auto" (default: $VSNYSTRA_BACKEND or "auto"), "torch" or "openvino"


# the options a bundled model's zoo entry may set ("defaults"): everything but which model, where and how it runs,
# and what the clip is
CLIP_KEYS = ("model", "device", "half", "backend", "progressive")
MODEL_DEFAULT_KEYS = tuple(f.name for f in dataclasses.fields(Options) if f.name not in CLIP_KEYS)


@dataclass(frozen=True)
class Settings:
    """What the runtime needs, resolved from :class:`Options`."""

    caller: str
    arch: Architecture | None  # None: the checkpoint matched no architecture (loading it reports why)
    model_path: Path
    attention_name: str  # "nystra", "exact" or "auto"
    attention: AttentionConfig
    device: torch.device
    dtype: torch.dtype
    tile: tuple[int, int] | None  # (w, h) in input pixels
    tile_overlap: int
    chunk: int | None  # video models: frames per temporal chunk
    chunk_overlap: int
    sigma: float | None  # the given noise level (by the user or the bundled model's defaults)
    # "torch"; "openvino" (backend="openvino" or device="openvino": the CPU through OpenVINO, exact attention);
    # "openvino-auto" (backend="auto" chose OpenVINO: falls back to torch if the model cannot be exported)
    backend: str = "torch"
    progressive: bool = False  # interlaced frames are restored as they are instead of refused


def attention_spec(
    name: object,
    landmarks: object,
    iters: object,
    arch: str | Architecture | None = None,
    *,
    enlarged_window: bool = False,
    caller: str = "vsnystra",
) -> AttentionSpec:
    """attention/landmarks/iters -> a spec, with the architecture's PnP-Nystra defaults for what is not given.

    "auto" = PnP-Nystra where it pays on the device, else exact; "nystra" = always PnP-Nystra; "exact".
    """
    key = (as_text(caller, "attention", name) or "auto").strip().lower()
    if key not in ATTENTION_CHOICES:
        raise fail(caller, f"attention must be one of {', '.join(map(repr, ATTENTION_CHOICES))}, got {key!r}")
    if key == "exact":
        for arg, val in (("landmarks", landmarks), ("iters", iters)):
            if val is not None:
                raise fail(
                    caller,
                    f'{arg} only applies to attention="nystra" or "auto"; drop it or change attention '
                    "(landmarks and iters only apply to PnP-Nystra)",
                )
        return Exact()
    described = architecture(arch) if isinstance(arch, str) else arch
    d = GENERIC_NYSTRA if described is None else described.nystra_defaults(enlarged_window=enlarged_window)
    m = d.landmarks if landmarks is None else check_int(caller, "landmarks", landmarks, minimum=1)
    k = d.iters if iters is None else check_int(caller, "iters", iters, minimum=0, maximum=MAX_ITERS)
    policy: Literal["always", "auto"] = "always" if key == "nystra" else "auto"
    return PnPNystra(landmarks=m, iters=k, threshold=d.threshold, pinv_init=FRONT_END_PINV_INIT, policy=policy)


def model_path(caller: str, model: object, arch: Architecture | None) -> Path:
    """The checkpoint for ``model`` (zoo name or file path), or ``arch``'s bundled default when it is not given."""
    text = as_text(caller, "model", model)
    given = text is not None and bool(text.strip())
    if text is None or not given:
        if arch is None:
            raise fail(caller, "no model given; pass a checkpoint path or a model name")
        text = arch.default_model
    text = text.strip()
    folder = Path(text).expanduser()
    if folder.is_dir():
        inside = sorted(p.name for p in folder.glob("*.pth"))[:3]
        hint = f" (it holds {', '.join(inside)})" if inside else ""
        raise fail(caller, f"model {text!r} is a folder, not a checkpoint file; pass the .pth file inside it{hint}")
    try:
        path = Path(resolve_model(text))
    except (FileNotFoundError, KeyError, ValueError, LookupError) as exc:
        if not given:
            raise fail(
                caller,
                f"the bundled default model {text!r} is not available ({exc}); "
                "pass model='/path/to/checkpoint.pth' or a downloaded model name",
            ) from exc
        raise fail(caller, f"model {text!r} not found ({exc}); pass a checkpoint path or a model zoo name") from exc
    if not path.is_file():
        raise fail(caller, f"model {text!r}: no such checkpoint file {str(path)!r}; pass an existing .pth path")
    return path


def _with_model_defaults(options: Options, path: Path) -> Options:
    """The bundled model's zoo defaults for every option the user left unset."""
    defaults = bundled_defaults(path)
    unknown = sorted(set(defaults) - set(MODEL_DEFAULT_KEYS))
    if unknown:
        raise ValueError(
            f"vsnystra.zoo: the defaults of {path.name} name unknown option(s) {unknown}; "
            f"allowed: {list(MODEL_DEFAULT_KEYS)} (fix models/zoo.json)"
        )
    given = dataclasses.asdict(options)
    return Options(**{**given, **{k: v for k, v in defaults.items() if given[k] is None}})


def _window(caller: str, value: object, arch: Architecture | None) -> Window | None:
    if value is None:
        return None
    if arch is None:
        sizes = check_ints(caller, "window", value, lengths=(1, 2, 3))
        return sizes[0] if len(sizes) == 1 else sizes
    if arch.window_lengths == (1,):
        return check_int(caller, "window", value, minimum=1)
    return check_ints(caller, "window", value, lengths=arch.window_lengths, hint=arch.window_hint)


def _tile(caller: str, value: object, arch: Architecture | None) -> tuple[int, int] | None:
    if value is None:
        return None
    sizes = check_ints(caller, "tile", value, lengths=(1, 2), minimum=0, hint=" ([w, h] in input pixels)")
    tw, th = (sizes[0], sizes[0]) if len(sizes) == 1 else sizes
    if (tw == 0) != (th == 0):
        raise fail(caller, f"tile {list(sizes)} mixes 0 (no tiling) and a size; use [0, 0] or two sizes")
    if not tw:
        return None
    if tw < MIN_TILE or th < MIN_TILE:
        raise fail(caller, f"tile {list(sizes)} is too small; use at least [{MIN_TILE}, {MIN_TILE}] (or omit tile)")
    if arch is not None and (tw % arch.tile_multiple or th % arch.tile_multiple):
        raise fail(
            caller,
            f"tile {[tw, th]} must be multiples of {arch.tile_multiple} ({arch.filter_name}'s window), e.g. [256, 256]",
        )
    return tw, th


def _tile_overlap(caller: str, value: object, tile: tuple[int, int] | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        sizes = check_ints(caller, "tile_overlap", value, lengths=(1, 2), minimum=0, hint=" (pixels, e.g. [20])")
        if len(set(sizes)) != 1:
            raise fail(caller, f"tile_overlap {list(sizes)} must be one value for both sides, e.g. [20]")
        overlap = sizes[0]
    else:
        overlap = check_int(caller, "tile_overlap", value, minimum=0)
    if tile is not None and 2 * overlap >= min(tile):
        raise fail(caller, f"tile_overlap {overlap} must be less than half the tile {list(tile)}")
    return overlap


def _chunks(caller: str, chunk: object, overlap: object) -> tuple[int | None, int | None]:
    n_chunk = None if chunk is None else check_int(caller, "chunk", chunk, minimum=2)
    if n_chunk is not None and n_chunk % 2:
        raise fail(caller, f"chunk must be even (video models run on 2-frame clips), got {n_chunk}; use {n_chunk + 1}")
    n_overlap = None if overlap is None else check_int(caller, "chunk_overlap", overlap, minimum=0)
    effective = video.DEFAULT_CHUNK if n_chunk is None else n_chunk
    if n_overlap is not None and n_overlap >= effective:
        raise fail(caller, f"chunk_overlap ({n_overlap}) must be smaller than chunk ({effective})")
    return n_chunk, n_overlap


def resolve(caller: str, options: Options, *, arch: Architecture | None = None) -> Settings:
    """Check every option and fill in the defaults; ``arch`` None detects it from the checkpoint's keys.

    Nothing is loaded: the checkpoint is only located (and, without ``arch``, its key names read).
    """
    path = model_path(caller, options.model, arch)
    arch = arch or detect_file(path)
    options = _with_model_defaults(options, path)
    window = _window(caller, options.window, arch)
    name = (as_text(caller, "attention", options.attention) or "auto").strip().lower()
    device_text = as_text(caller, "device", options.device) or "auto"
    backend = _backend(caller, options.backend, device_text)
    if backend == "openvino":
        _check_openvino(caller, name)
        name = "exact"
        device_text = "cpu" if device_text.strip().lower() in ("openvino", "auto") else device_text
    spec = attention_spec(
        name, options.landmarks, options.iters, arch, enlarged_window=window is not None, caller=caller
    )
    tile = _tile(caller, options.tile, arch)
    overlap = _tile_overlap(caller, options.tile_overlap, tile)
    chunk, chunk_overlap = _chunks(caller, options.chunk, options.chunk_overlap)
    if arch is not None and arch.kind == "image" and (chunk is not None or chunk_overlap is not None):
        log.warning("%s: chunk and chunk_overlap are ignored: image models restore frame by frame", caller)
        chunk = chunk_overlap = None
    sigma = None if options.sigma is None else check_sigma(caller, options.sigma)
    progressive = check_flag(caller, "progressive", options.progressive)
    try:
        device = resolve_device(device_text, caller=caller)
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc
    if backend == "openvino" and device.type != "cpu":
        raise fail(caller, f'backend="openvino" runs on the CPU, not {device}; use device="cpu" or backend="torch"')
    dtype = torch.float32 if backend == "openvino" else compute_dtype(device, options.half, arch)
    if backend == "auto":
        kind = "image" if arch is None else arch.kind
        chosen = (
            "torch"
            if arch is None
            else backends.auto_backend(
                arch.name, kind, name, enlarged_window=window is not None, device=device, dtype=dtype
            )
        )
        backend = "openvino-auto" if chosen == "openvino" else "torch"
    video_model = arch is not None and arch.kind == "video"
    runtime_overlap = video.DEFAULT_TILE_OVERLAP if video_model else image.DEFAULT_TILE_OVERLAP
    return Settings(
        caller=caller,
        arch=arch,
        model_path=path,
        attention_name=name,
        attention=AttentionConfig(spec=spec, window=window),
        device=device,
        dtype=dtype,
        tile=tile,
        tile_overlap=runtime_overlap if overlap is None else overlap,
        chunk=(video.DEFAULT_CHUNK if chunk is None else chunk) if video_model else None,
        chunk_overlap=video.DEFAULT_CHUNK_OVERLAP if chunk_overlap is None else chunk_overlap,
        sigma=sigma,
        backend=backend,
        progressive=progressive,
    )


def _backend(caller: str, given: object, device_text: str) -> str:
    """ "torch", "openvino" or "auto" from backend= and device= (device="openvino" is backend="openvino")."""
    text = as_text(caller, "backend", given)
    name = (text or default_backend()).strip().lower()
    if name not in BACKEND_CHOICES:
        raise fail(caller, f"backend must be one of {', '.join(map(repr, BACKEND_CHOICES))}, got {name!r}")
    if device_text.strip().lower() == "openvino":
        if text is not None and name == "torch":
            raise fail(caller, 'device="openvino" contradicts backend="torch"; drop one of them')
        return "openvino"
    return name


def _check_openvino(caller: str, attention: str) -> None:
    """device="openvino" runs exported models (video models: one graph per chunk length) with exact attention, and
    needs the optional package."""
    if attention == "nystra":
        raise fail(caller, 'device="openvino" runs exact attention only; drop attention="nystra" or use device="cpu"')
    if not backends.openvino_available():
        raise fail(caller, 'device="openvino" needs the openvino package; pip install "vsnystra[openvino]"')


class WindowTooSmall(SettingsError):
    """``window`` below the trained window; raised while loading, before the model is patched (no caller named:
    the front end that asked adds it with :func:`fail`)."""


def check_trained_window(window: Window | None, info: ModelInfo, model_name: str) -> None:
    """An enlarged window (the paper's use of ``window``) is at least the trained one in every dimension it sets:
    a smaller window silently changes what every token sees, and the output with it."""
    if window is None:
        return
    trained = tuple(int(v) for v in info.window)
    given = (window,) * 2 if isinstance(window, int) else tuple(int(v) for v in window)
    given = given[-len(trained) :]
    floor = trained[-len(given) :]
    if any(g < t for g, t in zip(given, floor, strict=True)):
        shown = window if isinstance(window, int) else list(window)
        least = floor[0] if isinstance(window, int) else list(floor)
        raise WindowTooSmall(
            f"window {shown} is smaller than the window {list(trained)} model {model_name!r} was trained with; "
            f"use at least {least} (a larger window enlarges attention) or leave window unset"
        )


def check_model(settings: Settings, info: ModelInfo) -> float | None:
    """After loading: the model belongs to the resolved architecture; returns the sigma to run it with.

    None for a non-blind denoiser means "estimate it from the clip" (:func:`vsnystra.runtime.noise.estimate_sigma`).
    """
    name = settings.model_path.name
    if settings.arch is not None and info.arch != settings.arch.name:
        other = architecture(info.arch).filter_name
        raise fail(settings.caller, f"model {name!r} is a {other} checkpoint; call nystra.{other} with it")
    try:
        check_trained_window(settings.attention.window, info, name)
    except WindowTooSmall as exc:
        raise fail(settings.caller, str(exc)) from None
    if info.needs_sigma:
        return settings.sigma
    if settings.sigma is not None:
        raise fail(
            settings.caller,
            f"sigma only applies to non-blind denoising models; {name!r} ({info.arch} {info.task}) takes none: "
            "drop --sigma (sigma= in a filter call)",
        )
    return None
