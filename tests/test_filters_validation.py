"""Every error path of nystra.RVRT / SwinIR / Uformer: raised before the model loads, naming the function and fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import vapoursynth as vs

from vsnystra.vs import filters
from vsnystra.vs.validate import FilterError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PARITY = SHARED / "fixtures" / "parity"
SWINIR = str(PARITY / "swinir_classical_x2.pth")
GRAY_SWINIR = str(PARITY / "swinir_graydn.pth")
RVRT_DN = str(PARITY / "rvrt_denoise_small.pth")
RVRT_SR = str(PARITY / "rvrt_sr_small.pth")
UFORMER = str(PARITY / "uformer_b_small.pth")
core = vs.core
RGB96 = core.query_video_format(vs.RGB, vs.INTEGER, 32, 0, 0).id  # 32-bit integer: zimg takes 8-16

needs_fixtures = pytest.mark.skipif(not PARITY.is_dir(), reason="../shared/fixtures/parity is missing")


def rgbs(w: int = 64, h: int = 48, n: int = 2, fmt: int = vs.RGBS) -> vs.VideoNode:
    return core.std.BlankClip(format=fmt, width=w, height=h, length=n)


@pytest.fixture
def allow_load() -> None:
    """Requested by the tests whose check needs the model's facts (they run after loading, before any frame)."""


@pytest.fixture(autouse=True)
def no_loading(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Argument errors must come before any model is loaded: loading fails the test unless it is allowed."""
    if "allow_load" in request.fixturenames:
        return

    def refuse() -> None:
        raise AssertionError("a model was loaded before the arguments were validated")

    monkeypatch.setattr(filters, "default_cache", refuse)


def expect(func, match: str, *args, **kwargs) -> FilterError:
    with pytest.raises(vs.Error, match=match) as info:
        func(*args, **kwargs)
    err = info.value
    assert isinstance(err, ValueError)
    assert str(err).startswith(f"nystra.{func.__name__}: "), str(err)
    return err  # type: ignore[return-value]


ALL = [filters.RVRT, filters.SwinIR, filters.Uformer]


@pytest.mark.parametrize("func", ALL)
def test_clip_must_be_a_video_node(func) -> None:
    expect(func, "clip must be a vs.VideoNode", 42, model=SWINIR)
    expect(func, "audio node", core.std.BlankAudio(), model=SWINIR)


@pytest.mark.parametrize("func", ALL)
def test_unsupported_sample_types_name_the_conversion(func) -> None:
    err = expect(func, "format RGB96 is not supported", rgbs(fmt=RGB96), model=SWINIR)
    assert "core.resize.Point(clip, format=vs.RGBS)" in str(err)


@pytest.mark.parametrize("func", ALL)
def test_frames_below_16x16_are_refused_with_the_real_minimum(func) -> None:
    expect(func, "at least 16x16, got 15x48", rgbs(15, 48), model=SWINIR)


@pytest.mark.parametrize("func", ALL)
def test_format_argument_is_checked(func) -> None:
    expect(func, "format must be a video format id", rgbs(), model=SWINIR, format="YUV420P8")
    expect(func, "format 12345 is not a constant video format id", rgbs(), model=SWINIR, format=12345)
    expect(func, "output format RGB96 is not supported", rgbs(), model=SWINIR, format=RGB96)


@pytest.mark.parametrize("func", ALL)
def test_variable_format_and_size_are_refused(func) -> None:
    a = rgbs(64, 48, 1)
    varsize = core.std.Splice([a, rgbs(80, 48, 1)], mismatch=True)
    expect(func, "variable frame size", varsize, model=SWINIR)
    varfmt = core.std.Splice([a, rgbs(64, 48, 1, vs.RGBH)], mismatch=True)
    expect(func, "variable format", varfmt, model=SWINIR)


@pytest.mark.parametrize("func", ALL)
def test_attention_arguments(func) -> None:
    expect(func, "attention must be one of", rgbs(), model=SWINIR, attention="linear")
    expect(func, "landmarks only applies", rgbs(), model=SWINIR, attention="exact", landmarks=16)
    expect(func, "iters only applies", rgbs(), model=SWINIR, attention=b"exact", iters=2)
    expect(func, "landmarks must be >= 1", rgbs(), model=SWINIR, attention="nystra", landmarks=0)
    expect(func, "iters must be >= 0", rgbs(), model=SWINIR, attention="nystra", iters=-1)
    expect(func, "iters must be an integer", rgbs(), model=SWINIR, iters=2.5)
    expect(func, "attention must be a string", rgbs(), model=SWINIR, attention=3)


def test_window_arguments() -> None:
    expect(filters.RVRT, r"window must have 2 or 3 value\(s\)", rgbs(), model=RVRT_SR, window=[2, 2, 64, 64])
    expect(filters.RVRT, "window must be >= 1", rgbs(), model=RVRT_SR, window=[0, 64])
    expect(filters.SwinIR, "window must be >= 1", rgbs(), model=SWINIR, window=0)
    expect(filters.Uformer, "window must be an integer", rgbs(), model=SWINIR, window=[8])


@pytest.mark.parametrize("func", ALL)
def test_device_arguments(func, monkeypatch: pytest.MonkeyPatch) -> None:
    expect(func, "device 'gpu' is not understood", rgbs(), model=SWINIR, device="gpu")
    expect(func, "not understood", rgbs(), model=SWINIR, device="cuda:x")
    monkeypatch.setattr("vsnystra.runtime.device.cuda_available", lambda: False)
    err = expect(func, "torch sees no CUDA device", rgbs(), model=SWINIR, device="cuda")
    assert 'device="cpu"' in str(err)


def test_device_index_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vsnystra.runtime.device.cuda_available", lambda: True)
    monkeypatch.setattr("vsnystra.runtime.device.cuda_device_count", lambda: 1)
    expect(filters.SwinIR, "does not exist, torch sees 1 CUDA", rgbs(), model=SWINIR, device="cuda:3")


@pytest.mark.parametrize("func", ALL)
def test_tile_arguments(func) -> None:
    expect(func, r"tile must have 1 or 2 value\(s\)", rgbs(), model=SWINIR, tile=[64, 64, 64])
    expect(func, "tile .* is too small", rgbs(), model=SWINIR, tile=[8, 8])
    expect(func, "mixes 0", rgbs(), model=SWINIR, tile=[0, 64])
    expect(func, "tile must be >= 0", rgbs(), model=SWINIR, tile=[-64, 64])
    overlap = [32] if func is filters.RVRT else 32
    expect(func, "tile_overlap .* less than half the tile", rgbs(), model=SWINIR, tile=[64, 64], tile_overlap=overlap)


def test_image_tile_overlap_must_be_an_int() -> None:
    expect(filters.SwinIR, "tile_overlap must be >= 0", rgbs(), model=SWINIR, tile_overlap=-1)


def test_rvrt_specific_arguments() -> None:
    clip = rgbs(64, 48)
    expect(filters.RVRT, "multiples of 8", clip, model=RVRT_SR, tile=[60, 64])
    expect(filters.RVRT, "chunk must be even", clip, model=RVRT_SR, chunk=7)
    expect(filters.RVRT, "chunk must be >= 2", clip, model=RVRT_SR, chunk=0)
    expect(filters.RVRT, "chunk_overlap .* smaller than chunk", clip, model=RVRT_SR, chunk=4, chunk_overlap=4)
    expect(filters.RVRT, "chunk_overlap must be >= 0", clip, model=RVRT_SR, chunk_overlap=-2)
    expect(filters.RVRT, "cache_chunks must be >= 1", clip, model=RVRT_SR, cache_chunks=0)
    expect(filters.RVRT, "sigma must be between 0 and 255", clip, model=RVRT_DN, sigma=-1.0)
    expect(filters.RVRT, "sigma must be a number", clip, model=RVRT_DN, sigma="loud")


@pytest.mark.parametrize("func", ALL)
def test_model_path_errors(func, tmp_path: Path) -> None:
    expect(func, "not found|no such checkpoint", rgbs(), model=str(tmp_path / "missing.pth"))
    expect(func, "not found|no such checkpoint", rgbs(), model=bytes(tmp_path / "missing.pth"))
    expect(func, "model must be UTF-8", rgbs(), model=b"\xff\xfe")


@pytest.mark.parametrize("func", ALL)
def test_missing_default_model_says_what_to_pass(func, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VSNYSTRA_MODELS_DIR", str(tmp_path))  # an empty zoo: no bundled default
    err = expect(func, "model=", rgbs())
    assert "default" in str(err)


# --- checks that need the model's facts (after a load, before any frame is processed) ---------------------------


@needs_fixtures
def test_checkpoint_of_another_architecture_names_the_right_filter(allow_load: None) -> None:
    expect(filters.RVRT, "is a SwinIR checkpoint; call nystra.SwinIR", rgbs(), model=SWINIR)
    expect(filters.Uformer, "is a SwinIR checkpoint; call nystra.SwinIR", rgbs(), model=SWINIR)


@needs_fixtures
def test_channel_mismatch_names_the_conversion(allow_load: None) -> None:
    err = expect(filters.SwinIR, r"expects 1 channel\(s\), the clip has 3", rgbs(), model=GRAY_SWINIR)
    assert "ShufflePlanes" in str(err)
    out = filters.SwinIR(rgbs(fmt=vs.GRAYS), model=SWINIR)  # colour models restore grey as RGB, return its luma
    assert (out.format.id, out.width) == (vs.GRAYS, 128)


@needs_fixtures
def test_output_format_must_fit_the_output_size(allow_load: None) -> None:
    expect(filters.Uformer, "cannot hold", rgbs(33, 48), model=UFORMER, format=vs.YUV420P8)


@needs_fixtures
def test_rvrt_model_dependent_checks(allow_load: None) -> None:
    expect(filters.RVRT, "sigma only applies to non-blind", rgbs(64, 48), model=RVRT_SR, sigma=10.0)
    small = filters.RVRT(rgbs(128, 20), model=RVRT_DN, sigma=10.0)  # padded to the flows' minimum, cropped back
    assert (small.width, small.height) == (128, 20)


def test_rvrt_tile_overlap_is_one_value() -> None:
    expect(filters.RVRT, "must be one value for both sides", rgbs(), model=RVRT_SR, tile=[64, 64], tile_overlap=[8, 16])
