"""PyAV plumbing for the CLI: colour conversion between coded frames and float RGB tensors, encoder setup.

Matrix handling (documented in the CLI help): the YUV→RGB matrix is the stream's tagged ``colorspace``
(BT.709, BT.601/SMPTE 170M/BT.470BG, BT.2020, SMPTE 240M, FCC); an untagged stream is treated as BT.709 when it
is at least 1280 wide or 720 tall, else BT.601 (the usual player convention). The range is the tagged one (full
when tagged JPEG/full, else limited). RGB-coded input (gbrp*, rgb*) is read without a matrix. The output is
converted back with the same matrix and range and tagged with the source's range, primaries, transfer and
matrix, so a restored file displays like the source. Chroma is resampled by swscale (bicubic, accurate rounding,
full chroma interpolation). No transfer-function conversion happens: the models see the coded (gamma) values,
as they did in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import av.video.stream
import numpy as np
from av.video.frame import VideoFrame
from av.video.reformatter import ColorRange, Colorspace, Interpolation, VideoReformatter

CODECS: dict[str, str] = {"x265": "libx265", "x264": "libx264", "ffv1": "ffv1"}
DEFAULT_PIX_FMT: dict[str, str] = {"x265": "yuv420p10le", "x264": "yuv420p", "ffv1": "yuv444p16le"}
DEFAULT_CRF: dict[str, int] = {"x265": 18, "x264": 16}

_INTERP = (
    Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT | Interpolation.FULL_CHR_H_INP
)
# AVColorSpace codes swscale understands, mapped to the table it should use.
_MATRIX_BY_CODE: dict[int, Colorspace] = {
    1: Colorspace.ITU709,
    4: Colorspace.FCC,
    5: Colorspace.ITU601,  # BT470BG
    6: Colorspace.ITU601,  # SMPTE170M
    7: Colorspace.SMPTE240M,
    9: Colorspace.BT2020,  # BT2020 NCL
    10: Colorspace.BT2020,  # BT2020 CL (approximated by the NCL table)
}
_UNSPECIFIED = 2


def is_rgb_format(name: str) -> bool:
    """True for pixel formats coded as RGB (no YUV matrix): gbrp*, rgb*, bgr*, argb, …"""
    return name.startswith(("gbr", "rgb", "bgr", "argb", "abgr", "0rgb", "0bgr", "x2rgb", "x2bgr"))


@dataclass(frozen=True)
class Colour:
    """Colour description of a stream: AV* enum codes as FFmpeg tags them (2 = unspecified)."""

    colorspace: int = _UNSPECIFIED
    color_range: int = 0
    color_primaries: int = _UNSPECIFIED
    color_trc: int = _UNSPECIFIED

    @classmethod
    def of(cls, obj: object) -> Colour:
        """Read the tags from a VideoFrame or a codec context."""
        space = getattr(obj, "colorspace", None)  # 0 is a real value (RGB), so no `or` here
        return cls(
            colorspace=_UNSPECIFIED if space is None else int(space),
            color_range=int(getattr(obj, "color_range", 0) or 0),
            color_primaries=int(getattr(obj, "color_primaries", _UNSPECIFIED) or _UNSPECIFIED),
            color_trc=int(getattr(obj, "color_trc", _UNSPECIFIED) or _UNSPECIFIED),
        )

    def merged(self, fallback: Colour) -> Colour:
        """Tags from self where set, else from ``fallback`` (frame tags over stream tags)."""
        return Colour(
            self.colorspace if self.colorspace != _UNSPECIFIED else fallback.colorspace,
            self.color_range or fallback.color_range,
            self.color_primaries if self.color_primaries != _UNSPECIFIED else fallback.color_primaries,
            self.color_trc if self.color_trc != _UNSPECIFIED else fallback.color_trc,
        )

    def matrix(self, width: int, height: int) -> Colorspace:
        """The YUV matrix to use: the tagged one, else BT.709 for HD sizes and BT.601 below."""
        m = _MATRIX_BY_CODE.get(self.colorspace)
        if m is not None:
            return m
        return Colorspace.ITU709 if width >= 1280 or height >= 720 else Colorspace.ITU601

    @property
    def full_range(self) -> bool:
        return self.color_range == int(ColorRange.JPEG)

    def range_enum(self) -> ColorRange:
        return ColorRange.JPEG if self.full_range else ColorRange.MPEG

    def for_output(self, pix_fmt: str, src_size: tuple[int, int]) -> Colour:
        """Tags for the encoded output: RGB output is tagged RGB; YUV from an RGB source gets the matrix used."""
        if is_rgb_format(pix_fmt):
            return Colour(0, self.color_range, self.color_primaries, self.color_trc)
        if self.colorspace == 0:  # RGB source coded to YUV: tag the matrix we convert with
            code = 1 if self.matrix(*src_size) == Colorspace.ITU709 else 6
            return Colour(code, self.color_range, self.color_primaries, self.color_trc)
        return self


class FrameConverter:
    """Coded frame ⇄ (3, H, W) float32 RGB array in [0, 1], one reformatter per direction (reused contexts).

    numpy, not torch, so that .vpy encodes and ``vsnystra weights`` never pay for importing torch.
    """

    def __init__(self, colour: Colour) -> None:
        self.colour = colour
        self._in = VideoReformatter()
        self._out = VideoReformatter()

    def to_array(self, frame: VideoFrame) -> np.ndarray:
        """Decode side: frame → (3, H, W) float32 RGB."""
        if is_rgb_format(frame.format.name):
            rgb = self._in.reformat(frame, format="rgb48le", interpolation=_INTERP)
        else:
            c = Colour.of(frame).merged(self.colour)
            rgb = self._in.reformat(
                frame,
                format="rgb48le",
                src_colorspace=c.matrix(frame.width, frame.height),
                src_color_range=c.range_enum(),
                dst_color_range=ColorRange.JPEG,
                interpolation=_INTERP,
            )
        arr = rgb.to_ndarray()  # (H, W, 3) uint16
        out = np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)
        out *= np.float32(1.0 / 65535.0)
        return out

    def to_frame(self, t: np.ndarray, pix_fmt: str, *, src_size: tuple[int, int]) -> VideoFrame:
        """Encode side: (3, H, W) float array → frame in ``pix_fmt`` tagged with the source's colour.

        ``src_size`` (w, h) picks the default matrix of an untagged source so both directions agree.
        """
        if t.ndim != 3 or t.shape[0] != 3:
            raise ValueError(f"vsnystra restore: expected a (3, H, W) frame from the model, got {tuple(t.shape)}")
        scaled = np.clip(np.asarray(t, dtype=np.float32), 0.0, 1.0) * np.float32(65535.0)  # new array
        hwc = np.ascontiguousarray(np.rint(scaled).astype(np.uint16).transpose(1, 2, 0))
        frame = VideoFrame.from_ndarray(hwc, format="rgb48le")
        if is_rgb_format(pix_fmt):
            out = self._out.reformat(frame, format=pix_fmt, interpolation=_INTERP)
        else:
            out = self._out.reformat(
                frame,
                format=pix_fmt,
                src_color_range=ColorRange.JPEG,
                dst_colorspace=self.colour.matrix(*src_size),
                dst_color_range=self.colour.range_enum(),
                interpolation=_INTERP,
            )
        tag_frame(out, self.colour.for_output(pix_fmt, src_size))
        return out


def tag_frame(frame: VideoFrame, colour: Colour) -> None:
    """Write the colour tags onto a frame (encoders read them from the frame or the context)."""
    frame.color_range = colour.color_range
    frame.colorspace = colour.colorspace
    frame.color_primaries = colour.color_primaries
    frame.color_trc = colour.color_trc


@dataclass(frozen=True)
class EncodeSettings:
    """What the user chose for the video encode."""

    codec: str = "x265"
    crf: float | None = None
    pix_fmt: str | None = None
    preset: str | None = None
    threads: int = 0

    def resolved_pix_fmt(self) -> str:
        return self.pix_fmt or DEFAULT_PIX_FMT[self.codec]


def add_video_stream(
    out: av.container.OutputContainer,
    settings: EncodeSettings,
    *,
    width: int,
    height: int,
    rate: Fraction,
    time_base: Fraction,
    colour: Colour,
    sample_aspect_ratio: Fraction | None,
) -> av.video.stream.VideoStream:
    """Add the encoded video stream, carrying frame rate, time base, SAR and colour tags (``Colour.for_output``)."""
    if settings.codec not in CODECS:
        raise ValueError(f"vsnystra restore: --codec must be one of {', '.join(CODECS)}, got {settings.codec!r}")
    options: dict[str, str] = {}
    if settings.codec in ("x265", "x264"):
        options["crf"] = str(settings.crf if settings.crf is not None else DEFAULT_CRF[settings.codec])
        options["preset"] = settings.preset or "medium"
        if settings.codec == "x265":
            options["x265-params"] = "log-level=error"
    else:  # ffv1 archival settings: version 3, slice CRCs, intra only
        options.update({"level": "3", "slicecrc": "1", "g": "1"})
    pix_fmt = settings.resolved_pix_fmt()
    odd_w, odd_h = width % 2, height % 2
    if ("420" in pix_fmt and (odd_w or odd_h)) or ("422" in pix_fmt and odd_w):
        raise ValueError(
            f"the restored frames are {width}x{height}, which {pix_fmt} (chroma subsampled) cannot hold; "
            "use --pix-fmt yuv444p10le (x265) / yuv444p16le (ffv1), or crop the input to even sizes"
        )
    stream = out.add_stream(CODECS[settings.codec], rate=rate, options=options)
    if not isinstance(stream, av.video.stream.VideoStream):  # narrows the type for mypy
        raise TypeError(f"vsnystra restore: {CODECS[settings.codec]} did not open a video stream")
    stream.width = width
    stream.height = height
    stream.pix_fmt = pix_fmt
    stream.time_base = time_base
    ctx = stream.codec_context
    ctx.time_base = time_base
    ctx.thread_count = settings.threads
    ctx.color_range = colour.color_range
    ctx.colorspace = colour.colorspace
    ctx.color_primaries = colour.color_primaries
    ctx.color_trc = colour.color_trc
    if sample_aspect_ratio:
        ctx.sample_aspect_ratio = sample_aspect_ratio
    return stream
