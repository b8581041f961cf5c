"""Any clip in, the same kind of clip out: formats, frame properties and tiny frames through all three filters."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import vapoursynth as vs

from vsnystra.archs.registry import load_model
from vsnystra.runtime.image import restore_image
from vsnystra.vs import formats
from vsnystra.vs.filters import RVRT, SwinIR, Uformer
from vsnystra.vs.frames import frame_to_tensor

core = vs.core
MODELS = Path(__file__).resolve().parents[1] / "models"
BUNDLED = {SwinIR: MODELS / "swinir-x2-small.pth", Uformer: MODELS / "uformer-denoise-small.pth"}
ALL = [SwinIR, Uformer, RVRT]


def picture(w: int, h: int, n: int = 2, seed: int = 0) -> vs.VideoNode:
    """Smooth colour gradients with mild noise, RGBS, with a custom property and a scene cut on frame 1."""
    blank = core.std.BlankClip(format=vs.RGBS, width=w, height=h, length=n, keep=True)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        rng = np.random.default_rng((seed, n))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        for p in range(3):
            plane = 0.5 + 0.35 * np.sin(xx / (5 + 3 * p) + yy / (7 + p) + n) + 0.03 * rng.standard_normal((h, w))
            np.copyto(np.asarray(out[p]), np.clip(plane, 0, 1).astype(np.float32))
        out.props["label"] = "keep-me"
        return out

    return core.std.ModifyFrame(blank, blank, fill)


def planes(frame: vs.VideoFrame) -> list[np.ndarray]:
    return [np.asarray(frame[p]).astype(np.float64) for p in range(frame.format.num_planes)]


def same_frames(a: vs.VideoNode, b: vs.VideoNode, n: int = 0) -> bool:
    fa, fb = a.get_frame(n), b.get_frame(n)
    return a.format.id == b.format.id and all(np.array_equal(x, y) for x, y in zip(planes(fa), planes(fb), strict=True))


def run(func: Callable[..., vs.VideoNode], clip: vs.VideoNode, **kw: object) -> vs.VideoNode:
    return func(clip, device="cpu", attention="exact", **kw)


def test_default_matrix_follows_vs_jetpack() -> None:
    assert formats.default_matrix(1920, 1080) == formats.MATRIX_BT709
    assert formats.default_matrix(1280, 720) == formats.MATRIX_BT709
    assert formats.default_matrix(720, 576) == formats.MATRIX_BT470BG
    assert formats.default_matrix(720, 480) == formats.MATRIX_SMPTE170M


@pytest.mark.parametrize("func", [SwinIR, Uformer])
def test_float_rgb_is_bit_identical_to_restore_image(func) -> None:
    clip = picture(24, 20, 1)
    model = load_model(str(BUNDLED[func]))
    with torch.no_grad():
        want = restore_image(model, frame_to_tensor(clip.get_frame(0))).numpy()
    got = run(func, clip, model=str(BUNDLED[func])).get_frame(0)
    assert np.array_equal(np.stack([np.asarray(got[p]) for p in range(3)]), want)


@pytest.mark.parametrize("func", ALL)
def test_yuv420p10_round_trip_equals_the_explicit_conversion_and_keeps_props(func) -> None:
    rgb = picture(32, 24)
    yuv = core.resize.Bicubic(rgb, format=vs.YUV420P10, matrix_s="709").std.SetFrameProps(_Primaries=1, _Transfer=1)
    out = run(func, yuv)
    explicit_in = core.resize.Bicubic(yuv, format=vs.RGBS, matrix_in=1, range_in_s="limited", chromaloc_in=0)
    explicit = core.resize.Bicubic(
        run(func, explicit_in), format=vs.YUV420P10, matrix=1, range_s="limited", chromaloc=0
    )
    scale = 2 if func is SwinIR else 1
    assert (out.format.id, out.width, out.height) == (vs.YUV420P10, 32 * scale, 24 * scale)
    assert same_frames(out, explicit, 1)
    props = out.get_frame(1).props
    assert props["label"] == "keep-me" and props["_Matrix"] == 1
    assert (props["_Primaries"], props["_Transfer"]) == (1, 1)
    assert props["nystra_model"].endswith(".pth")


def test_unset_matrix_uses_the_sd_default() -> None:
    rgb = picture(32, 24, 1)
    yuv = core.resize.Bicubic(rgb, format=vs.YUV444P8, matrix=6).std.RemoveFrameProps("_Matrix")
    out = run(Uformer, yuv)
    explicit = core.resize.Bicubic(
        run(Uformer, core.resize.Bicubic(yuv, format=vs.RGBS, matrix_in=6, range_in_s="limited")),
        format=vs.YUV444P8,
        matrix=6,
        range_s="limited",
    )
    assert same_frames(out, explicit)
    assert "_Matrix" not in out.get_frame(0).props  # unset stays unset


@pytest.mark.parametrize("func", ALL)
def test_gray_returns_the_luma_of_the_restored_rgb(func) -> None:
    grey = core.resize.Bicubic(picture(40, 36), format=vs.GRAY16, matrix_s="709")
    out = run(func, grey)
    assert out.format.id == vs.GRAY16
    rgb = core.std.ShufflePlanes(core.resize.Point(grey, format=vs.GRAYS, range_in_s="limited"), [0, 0, 0], vs.RGB)
    explicit = core.resize.Bicubic(
        run(func, rgb.std.SetFrameProps(_Matrix=0)),
        format=vs.GRAY16,
        matrix=formats.MATRIX_BT709,  # the grey clip's own _Matrix
        range_s="limited",
    )
    assert same_frames(out, explicit)
    # the output is close to the input (all three models restore, none invents colour)
    a = np.asarray(out.get_frame(0)[0]).astype(np.float64)
    scale = 2 if func is SwinIR else 1
    b = np.asarray(core.resize.Bicubic(grey, width=40 * scale, height=36 * scale).get_frame(0)[0]).astype(np.float64)
    assert np.abs(a - b).mean() < 0.05 * 65535


@pytest.mark.parametrize("fmt", [vs.RGB24, vs.RGB48, vs.YUV444PH, vs.YUV422P8, vs.YUV444PS, vs.GRAYH])
def test_every_family_comes_back_in_its_format(fmt: int) -> None:
    rgb = core.get_video_format(fmt).color_family == vs.RGB
    clip = core.resize.Bicubic(picture(32, 16), format=fmt, **({} if rgb else {"matrix_s": "709"}))
    out = run(SwinIR, clip)
    f = out.get_frame(0)
    assert (out.format.id, out.width, out.height) == (fmt, 64, 32)
    assert f.props["label"] == "keep-me"
    assert all(np.isfinite(p).all() for p in planes(f))


@pytest.mark.filterwarnings("ignore:The _ColorRange frame property has been deprecated")
@pytest.mark.parametrize(
    ("props", "colour_range", "chromaloc"),
    [
        ({"_Range": 1, "_ChromaLocation": 2}, "full", 2),
        ({"_ColorRange": 0}, "full", 0),
        ({"_ChromaLocation": 1}, "limited", 1),
    ],
)
def test_range_and_chroma_location_props_drive_both_conversions(
    props: dict[str, int], colour_range: str, chromaloc: int
) -> None:
    """_Range (or the older _ColorRange, 0 = full) and _ChromaLocation are read from the frames, not assumed."""
    encode = {"matrix": 1, "range_s": colour_range, "chromaloc": chromaloc}
    yuv = core.resize.Bicubic(picture(32, 24, 1), format=vs.YUV420P8, **encode)
    yuv = yuv.std.RemoveFrameProps(["_Range", "_ColorRange", "_ChromaLocation"]).std.SetFrameProps(**props)
    out = run(Uformer, yuv)

    def explicit(rng: str, loc: int) -> vs.VideoNode:
        rgb = core.resize.Bicubic(yuv, format=vs.RGBS, matrix_in=1, range_in_s=rng, chromaloc_in=loc)
        return core.resize.Bicubic(run(Uformer, rgb), format=vs.YUV420P8, matrix=1, range_s=rng, chromaloc=loc)

    assert same_frames(out, explicit(colour_range, chromaloc))
    assert not same_frames(out, explicit("limited", 0))  # the defaults would give another picture
    got, given = out.get_frame(0).props, yuv.get_frame(0).props
    assert {k: got[k] for k in props} == {k: given[k] for k in props}


def test_format_argument_picks_another_output_format() -> None:
    clip = picture(32, 24, 1)
    out = run(Uformer, clip, format=vs.YUV420P8)
    assert out.format.id == vs.YUV420P8
    props = out.get_frame(0).props
    assert props["_Matrix"] == formats.MATRIX_SMPTE170M and props["label"] == "keep-me"
    assert same_frames(out, core.resize.Bicubic(run(Uformer, clip), format=vs.YUV420P8, matrix=6, range_s="limited"))


@pytest.mark.parametrize("func", ALL)
@pytest.mark.parametrize(("w", "h"), [(16, 16), (17, 31), (131, 129)])
def test_any_size_from_16x16(func, w: int, h: int) -> None:
    clip = core.resize.Bicubic(picture(w, h), format=vs.YUV444P16, matrix_s="709")
    out = run(func, clip)
    scale = 2 if func is SwinIR else 1
    assert (out.width, out.height) == (w * scale, h * scale)
    f = out.get_frame(1)
    a = np.asarray(f[0]).astype(np.float64)
    b = np.asarray(core.resize.Bicubic(clip, width=w * scale, height=h * scale).get_frame(1)[0]).astype(np.float64)
    assert np.abs(a - b).mean() < 0.05 * 65535  # a restoration of the frame, not of its padding


@pytest.mark.parametrize("func", [Uformer, RVRT])
def test_one_pal_frame_directly(func) -> None:
    """720x576 YUV420P8 without _Matrix (BT.470BG both ways); SwinIR's 720x576 frame runs under vspipe
    (test_vspipe_formats.py)."""
    rgb = picture(720, 576, 1)
    yuv = core.resize.Bicubic(rgb, format=vs.YUV420P8, matrix_s="470bg").std.RemoveFrameProps("_Matrix")
    out = run(func, yuv)
    assert (out.format.id, out.width, out.height) == (vs.YUV420P8, 720, 576)
    f = out.get_frame(0)
    assert f.props["label"] == "keep-me" and "_Matrix" not in f.props
    src = yuv.get_frame(0)
    for p in range(3):
        assert np.abs(np.asarray(f[p]).astype(np.float64) - np.asarray(src[p])).mean() < 0.05 * 255, (
            p
        )  # the picture, restored
