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


MIN_SIDE = 16  # smaller frames are refused; larger ones are padded to each architecture's minimum (README)


def check_clip(func: str, clip: Any, *, min_frames: int = 1) -> bool:
    """Refuse variable clips, unsupported sample types and frames below 16x16; returns True for half precision.

    Every constant format zimg converts is accepted (integer 8-16 bit, half and single float; RGB, YUV, grey): the
    filters convert it for the model and back (:mod:`vsnystra.vs.formats`).
    """
    if isinstance(clip, vs.AudioNode):
        raise fail(func, "clip must be a video clip, got an audio node")
    if not isinstance(clip, vs.VideoNode):
        raise fail(func, f"clip must be a vs.VideoNode, got {type(clip).__name__}")
    fmt = clip.format
    if fmt is None or fmt.id == 0:
        raise fail(
            func,
            "clip has a variable format; make it constant first, e.g. "
            "core.resize.Bicubic(clip, format=vs.YUV420P10, matrix_in_s='709')",
        )
    if clip.width == 0 or clip.height == 0:
        raise fail(
            func,
            "clip has a variable frame size; make it constant first, e.g. core.resize.Bicubic(clip, width=W, height=H)",
        )
    check_sample_type(func, "clip", fmt)
    if min(clip.width, clip.height) < MIN_SIDE:
        raise fail(
            func,
            f"frames must be at least {MIN_SIDE}x{MIN_SIDE}, got {clip.width}x{clip.height}; "
            f"pad first, e.g. core.std.AddBorders",
        )
    if clip.num_frames < min_frames:
        raise fail(func, f"clip must have at least {min_frames} frame(s), got {clip.num_frames}")
    return fmt.sample_type == vs.FLOAT and fmt.bits_per_sample == 16


def check_sample_type(func: str, what: str, fmt: vs.VideoFormat) -> None:
    integer_ok = fmt.sample_type == vs.INTEGER and 8 <= fmt.bits_per_sample <= 16
    float_ok = fmt.sample_type == vs.FLOAT and fmt.bits_per_sample in (16, 32)
    if not (integer_ok or float_ok):
        raise fail(
            func,
            f"{what} format {fmt.name} is not supported (integer 8-16 bit, half or single float); "
            "convert with core.resize.Point(clip, format=vs.RGBS)",
        )


FIELD_ORDER = {1: "bottom field first", 2: "top field first"}  # _FieldBased: 0 progressive, 1 BFF, 2 TFF


def check_progressive(func: str, props: Any, n: int) -> None:
    """Refuse an interlaced frame (``_FieldBased`` 1 or 2): the models restore whole frames, and restoring woven
    fields smears the combing into both. The ``progressive`` keyword skips this check."""
    field_based = int(props.get("_FieldBased", 0))
    if field_based not in FIELD_ORDER:
        return
    bwdif_field = 1 if field_based == 2 else 0  # vs-bwdif's same-rate mode keeping the first field
    raise fail(
        func,
        f"frame {n} is interlaced (_FieldBased={field_based}, {FIELD_ORDER[field_based]}); deinterlace first, "
        f"e.g. core.bwdif.Bwdif(clip, field={bwdif_field}) or QTGMC, or pass progressive=1 to restore the frames "
        "as they are",
    )


def refuse_interlaced(func: str, clip: vs.VideoNode) -> vs.VideoNode:
    """``clip`` with every frame checked by :func:`check_progressive` as the filter reads it (RVRT's chunks too)."""

    def check(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        check_progressive(func, f.props, n)
        return f

    return vs.core.std.ModifyFrame(clip, clip, check)


def check_format(func: str, value: object) -> vs.VideoFormat | None:
    """The ``format`` argument: a constant video format id (e.g. vs.YUV420P10), or None for the input's format."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(func, f"format must be a video format id such as vs.YUV420P10, got {value!r}")
    try:
        fmt = vs.core.get_video_format(value)
    except vs.Error as exc:
        raise fail(func, f"format {value} is not a constant video format id; pass one such as vs.YUV420P10") from exc
    if fmt.id == 0:
        raise fail(func, f"format {value} is not a constant video format id; pass one such as vs.YUV420P10")
    check_sample_type(func, "output", fmt)
    return fmt


def check_output_size(func: str, fmt: vs.VideoFormat, width: int, height: int) -> None:
    """The output frame size must fit the output format's chroma subsampling."""
    if width % (1 << fmt.subsampling_w) or height % (1 << fmt.subsampling_h):
        raise fail(
            func,
            f"the output is {width}x{height}, which {fmt.name} cannot hold (chroma subsampling); "
            "pick another format, e.g. the 4:4:4 one",
        )
