"""Any constant-format clip in, the same kind of clip out: the conversions around the models' float RGB.

Why it is built this way: the models see float RGB (or float grey for one-channel checkpoints) in [0, 1]. Other
clips are converted with ``core.resize`` (zimg) inside the filter graph, restored, and converted back to the input's
format (same subsampling and bit depth, at the model's output size) or to the ``format`` the caller asks for; the
output frames carry the input frames' properties. Float RGB (RGBS/RGBH) and float grey clips for grey checkpoints
go through untouched, so their results are bit-identical to a direct call.

The colour properties are read from the first frame (a clip's colour description is constant in practice) and
used for both directions, so the round trip is consistent. Unset properties get the defaults vs-jetpack uses:
``_Matrix`` BT.709 for HD (wider than 1024 or taller than 576 px), else BT.601 (SMPTE 170M at 480 lines or less,
BT.470BG otherwise; same coefficients); the range (``_Range``, formerly ``_ColorRange``) limited for YUV and grey,
full for RGB; ``_ChromaLocation`` left (MPEG-2). ``_Transfer`` and ``_Primaries`` are never changed: the models
restore gamma-encoded RGB, so the input's transfer and primaries carry over to the output as they are (unset stays
unset). Grey clips are restored as RGB (the grey replicated) and return the luma of the restored RGB.

Both conversions treat the frames as progressive (``_FieldBased`` 0; zimg would otherwise site the chroma of each
field apart): interlaced clips reach them only when the caller said ``progressive=1``, and the output frames get the
input's ``_FieldBased`` back with its other properties.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import vapoursynth as vs

MATRIX_BT709, MATRIX_BT470BG, MATRIX_SMPTE170M, MATRIX_UNSPECIFIED = 1, 5, 6, 2
FULL, LIMITED = "full", "limited"  # passed to zimg as range_s / range_in_s
CHROMA_LEFT = 0
# the range property: R81's _Range (0 limited, 1 full, zimg's convention); older cores' _ColorRange (0 full, 1 limited)
COLOUR_KEYS = ("_Matrix", "_Range", "_ColorRange", "_ChromaLocation")


def default_matrix(width: int, height: int) -> int:
    """vs-jetpack's Matrix.from_res: BT.709 for HD, BT.601 (170M / 470BG) for SD."""
    if width > 1024 or height > 576:
        return MATRIX_BT709
    return MATRIX_SMPTE170M if height <= 480 else MATRIX_BT470BG


@dataclass(frozen=True)
class Colour:
    """The colour description the conversions use (from the first frame's properties, defaults where unset)."""

    matrix: int
    range: str  # "full" or "limited"
    chromaloc: int


def clip_colour(clip: vs.VideoNode, props: Any) -> Colour:
    """The clip's colour description: its first frame's properties, vs-jetpack's defaults where they are unset."""
    family = clip.format.color_family
    matrix = int(props.get("_Matrix", MATRIX_UNSPECIFIED))
    if family == vs.RGB or matrix in (MATRIX_UNSPECIFIED, 0):
        matrix = default_matrix(clip.width, clip.height)
    keys = set(props.keys())  # membership tests on a deprecated key would warn
    if "_Range" in keys:
        colour_range = FULL if int(props["_Range"]) == 1 else LIMITED
    elif "_ColorRange" in keys:
        colour_range = FULL if int(props["_ColorRange"]) == 0 else LIMITED
    else:
        colour_range = FULL if family == vs.RGB else LIMITED
    return Colour(matrix=matrix, range=colour_range, chromaloc=int(props.get("_ChromaLocation", CHROMA_LEFT)))


def model_format(clip_format: vs.VideoFormat, channels: int) -> vs.VideoFormat:
    """The float format a model with ``channels`` reads for a clip: half for half-float clips, else single."""
    bits = 16 if clip_format.sample_type == vs.FLOAT and clip_format.bits_per_sample == 16 else 32
    family = vs.RGB if channels == 3 else vs.GRAY
    return vs.core.query_video_format(family, vs.FLOAT, bits, 0, 0)


@dataclass(frozen=True)
class Conversion:
    """How a clip reaches a model and how the model's output returns to the caller's format."""

    to_model: Callable[[vs.VideoNode], vs.VideoNode]
    from_model: Callable[[vs.VideoNode], vs.VideoNode]  # restored clip -> output clip (colour props set by resize)
    identity_out: bool  # the restored clip already is the output (no conversion, props pass through)


def _default_range(family: int) -> str:
    return FULL if family == vs.RGB else LIMITED


def _float_twin(fmt: vs.VideoFormat, family: int) -> vs.VideoFormat:
    return vs.core.query_video_format(family, vs.FLOAT, fmt.bits_per_sample, 0, 0)


def _progressive(clip: vs.VideoNode) -> vs.VideoNode:
    return vs.core.std.SetFrameProps(clip, _FieldBased=0)


def _into_model(clip: vs.VideoNode, mfmt: vs.VideoFormat, colour: Colour) -> vs.VideoNode:
    """The clip in the model's float format; the colour description names the source side."""
    clip = _progressive(clip)
    family = clip.format.color_family
    if family == vs.GRAY and mfmt.color_family == vs.RGB:  # the grey replicated in R, G and B
        grey = vs.core.resize.Point(clip, format=_float_twin(mfmt, vs.GRAY).id, range_in_s=colour.range)
        rgb = vs.core.std.ShufflePlanes(grey, [0, 0, 0], vs.RGB)
        return vs.core.std.SetFrameProps(rgb, _Matrix=0)  # RGB: zimg refuses YUV coefficients on it
    kw: dict[str, Any] = {"format": mfmt.id, "range_in_s": colour.range}
    if family == vs.YUV:
        kw.update(matrix_in=colour.matrix, chromaloc_in=colour.chromaloc)
    return vs.core.resize.Bicubic(clip, **kw)


def _out_of_model(clip: vs.VideoNode, target: vs.VideoFormat, source_family: int, colour: Colour) -> vs.VideoNode:
    """The restored float clip in ``target``; the colour description names the target side (its range is the
    source's when both sides are RGB or both are not, else the target family's default)."""
    family = target.color_family
    same_kind = (family == vs.RGB) == (source_family == vs.RGB)
    kw: dict[str, Any] = {"format": target.id, "range_s": colour.range if same_kind else _default_range(family)}
    if family != vs.RGB and clip.format.color_family == vs.RGB:
        kw["matrix"] = colour.matrix
    if family == vs.YUV:
        kw["chromaloc"] = colour.chromaloc
    return vs.core.resize.Bicubic(_progressive(clip), **kw)


def plan(clip: vs.VideoNode, channels: int, out_format: vs.VideoFormat | None) -> Conversion:
    """The conversions for a model with ``channels`` input channels (3: RGB, 1: grey) and the wanted output.

    The first frame's properties are read only when a conversion is needed (float RGB in and out reads none).
    """
    src = clip.format
    target = out_format or src
    mfmt = model_format(src, channels)
    same_in = src.id == mfmt.id
    same_out = target.id == mfmt.id
    colour = None if same_in and same_out else clip_colour(clip, clip.get_frame(0).props)

    def to_model(c: vs.VideoNode) -> vs.VideoNode:
        return c if colour is None or same_in else _into_model(c, mfmt, colour)

    def from_model(c: vs.VideoNode) -> vs.VideoNode:
        return c if colour is None or same_out else _out_of_model(c, target, src.color_family, colour)

    return Conversion(to_model=to_model, from_model=from_model, identity_out=same_out and same_in)


def with_input_props(
    converted: vs.VideoNode, source: vs.VideoNode, restored: vs.VideoNode, *, keep_colour: bool
) -> vs.VideoNode:
    """Output frames carrying the source frame's properties plus the filter's ``nystra_*`` ones.

    ``keep_colour`` False (another output format) takes the colour properties the conversion wrote instead.
    """

    def merge(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        out = f[0].copy()
        props = {k: f[1].props[k] for k in f[1].props}
        if not keep_colour:
            written = set(f[0].props.keys())
            for key in COLOUR_KEYS:
                props.pop(key, None)
                if key in written:
                    props[key] = f[0].props[key]
        props.update({k: f[2].props[k] for k in f[2].props if k.startswith("nystra_")})
        out_props = out.props
        out_props.clear()
        out_props.update(props)
        return out

    return vs.core.std.ModifyFrame(converted, [converted, source, restored], merge)
