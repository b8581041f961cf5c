"""Clip validation for the nystra.* filters, and the filters' error type.

Why a module of its own: every check must run before heavy work and every error must name the function and the
fix. The options the filters share with the command line are checked by :mod:`vsnystra.runtime.settings` (one set of
rules and messages for both front ends); this module adds what only a filter has (the clip) and turns settings
errors into :class:`FilterError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import vapoursynth as vs

from vsnystra.runtime.settings import SettingsError


class FilterError(vs.Error, ValueError):
    """A user error in a nystra.* call: a vs.Error for VapourSynth, a ValueError for plain Python callers."""


def fail(func: str, message: str) -> FilterError:
    """Build the error for ``nystra.<func>``; callers ``raise fail(...)``."""
    return FilterError(f"nystra.{func}: {message}")


@contextlib.contextmanager
def filter_errors() -> Iterator[None]:
    """Re-raise the settings resolver's errors (already named ``nystra.<func>: ...``) as FilterError."""
    try:
        yield
    except SettingsError as exc:
        raise FilterError(str(exc)) from None


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
