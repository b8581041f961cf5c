"""Argument and clip validation for the nystra.* filters, done before any model is loaded.

Why a module of its own: every check must run before heavy work and every error must name the function and the
fix, so the rules live in one place and tests can walk each error path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import vapoursynth as vs

from vsnystra.archs.registry import architecture
from vsnystra.attention.defaults import FRONT_END_PINV_INIT
from vsnystra.attention.specs import AttentionSpec, Exact, PnPNystra
from vsnystra.zoo import resolve_model

ATTENTION_CHOICES = ("nystra", "exact", "auto")


class FilterError(vs.Error, ValueError):
    """A user error in a nystra.* call: a vs.Error for VapourSynth, a ValueError for plain Python callers."""


def fail(func: str, message: str) -> FilterError:
    """Build the error for ``nystra.<func>``; callers ``raise fail(...)``."""
    return FilterError(f"nystra.{func}: {message}")


def as_text(func: str, name: str, value: Any) -> str | None:
    """VapourSynth hands ``data`` arguments over as str or bytes; accept both (and None for "not given")."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise fail(func, f"{name} must be UTF-8 text, got undecodable bytes") from exc
    if isinstance(value, str):
        return value
    raise fail(func, f"{name} must be a string, got {type(value).__name__} {value!r}")


def _conversion_hint(fmt: vs.VideoFormat, half: bool) -> str:
    target = "vs.RGBH" if half else "vs.RGBS"
    if fmt.color_family == vs.YUV:
        return f"core.resize.Bicubic(clip, format={target}, matrix_in_s='709')"
    if fmt.color_family == vs.GRAY:
        return f"core.resize.Point(clip, format={target}) (gray is repeated in R, G and B)"
    return f"core.resize.Point(clip, format={target})"


def check_clip(func: str, clip: Any, *, allow_gray: bool = False, min_frames: int = 1) -> bool:
    """Refuse anything but a constant-size, constant-format float RGB clip; returns True for half precision."""
    if isinstance(clip, vs.AudioNode):
        raise fail(func, "clip must be a video clip, got an audio node")
    if not isinstance(clip, vs.VideoNode):
        raise fail(func, f"clip must be a vs.VideoNode, got {type(clip).__name__}")
    fmt = clip.format
    if fmt is None or fmt.id == 0:
        raise fail(
            func,
            "clip has a variable format; make it constant first, e.g. "
            "core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s='709')",
        )
    if clip.width == 0 or clip.height == 0:
        raise fail(
            func,
            "clip has a variable frame size; make it constant first, e.g. core.resize.Bicubic(clip, width=W, height=H)",
        )
    accepted = [vs.RGBS, vs.RGBH]
    if allow_gray:
        accepted += [vs.GRAYS, vs.GRAYH]
    if fmt.id not in accepted:
        names = "RGBS or RGBH" + (" (GRAYS/GRAYH for 1-channel models)" if allow_gray else "")
        half = fmt.sample_type == vs.FLOAT and fmt.bits_per_sample == 16
        raise fail(func, f"clip must be {names}, got {fmt.name}; convert with {_conversion_hint(fmt, half)}")
    if clip.num_frames < min_frames:
        raise fail(func, f"clip must have at least {min_frames} frame(s), got {clip.num_frames}")
    return fmt.bits_per_sample == 16


def check_int(func: str, name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(func, f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise fail(func, f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise fail(func, f"{name} must be <= {maximum}, got {value}")
    return int(value)


def check_ints(
    func: str, name: str, value: Any, *, lengths: Sequence[int], minimum: int = 1, hint: str = ""
) -> tuple[int, ...]:
    """An int[] argument (VapourSynth passes a list; a bare int is accepted as a one-element list)."""
    items = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(items, (list, tuple)):
        raise fail(func, f"{name} must be a list of integers, got {type(value).__name__} {value!r}{hint}")
    if len(items) not in lengths:
        want = " or ".join(str(n) for n in lengths)
        raise fail(func, f"{name} must have {want} value(s), got {len(items)}: {list(items)!r}{hint}")
    return tuple(check_int(func, name, v, minimum=minimum) for v in items)


def check_sigma(func: str, sigma: Any) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise fail(func, f"sigma must be a number (noise level on the 0-255 scale), got {sigma!r}")
    value = float(sigma)
    if not math.isfinite(value) or value < 0 or value > 255:
        raise fail(func, f"sigma must be between 0 and 255 (noise level on the 0-255 scale), got {sigma!r}")
    return value


def attention_spec(
    func: str,
    attention: Any,
    landmarks: Any,
    iters: Any,
    *,
    default_landmarks: int,
    default_iters: int,
    threshold: float | None,
) -> tuple[str, AttentionSpec]:
    """Map the filter's attention/landmarks/iters to an attention spec (landmarks/iters only with Nyström)."""
    name = (as_text(func, "attention", attention) or "auto").strip().lower()
    if name not in ATTENTION_CHOICES:
        raise fail(func, f"attention must be one of {', '.join(map(repr, ATTENTION_CHOICES))}, got {name!r}")
    if name == "exact":
        for arg, val in (("landmarks", landmarks), ("iters", iters)):
            if val is not None:
                raise fail(func, f'{arg} only applies to attention="nystra" or "auto"; drop it or change attention')
        return name, Exact()
    m = default_landmarks if landmarks is None else check_int(func, "landmarks", landmarks, minimum=1)
    k = default_iters if iters is None else check_int(func, "iters", iters, minimum=0, maximum=64)
    policy: Literal["always", "auto"] = "always" if name == "nystra" else "auto"
    return name, PnPNystra(landmarks=m, iters=k, threshold=threshold, pinv_init=FRONT_END_PINV_INIT, policy=policy)


def resolve_model_path(func: str, model: Any) -> Path:
    """A checkpoint path from ``model`` (zoo name or file path), or the bundled default when model is not given."""
    text = as_text(func, "model", model)
    given = text is not None and bool(text.strip())
    if not given:
        text = architecture(func).default_model
    assert text is not None
    text = text.strip()
    try:
        path = Path(resolve_model(text))
    except (FileNotFoundError, KeyError, ValueError, LookupError) as exc:
        if not given:
            raise fail(
                func,
                f"the bundled default model {text!r} is not available ({exc}); "
                "pass model='/path/to/checkpoint.pth' or a downloaded model name",
            ) from exc
        raise fail(func, f"model {text!r} not found ({exc}); pass a checkpoint path or a model zoo name") from exc
    if not path.is_file():
        raise fail(func, f"model {text!r}: no such checkpoint file {str(path)!r}; pass an existing .pth path")
    return path
