"""nystra.SwinIR / nystra.Uformer against restore_image on the same frames, formats, props, threads, cache."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import vapoursynth as vs

from vsnystra.archs.patch import patch_attention
from vsnystra.archs.registry import load_model
from vsnystra.attention.specs import PnPNystra
from vsnystra.runtime import device
from vsnystra.runtime.cache import default_cache
from vsnystra.runtime.image import restore_image
from vsnystra.vs.filters import SwinIR, Uformer
from vsnystra.vs.frames import frame_to_tensor, tensor_to_frame

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PARITY = SHARED / "fixtures" / "parity"
SWINIR = PARITY / "swinir_classical_x2.pth"
GRAY = PARITY / "swinir_graydn.pth"
UFORMER = PARITY / "uformer_b_small.pth"

pytestmark = pytest.mark.skipif(not SWINIR.is_file(), reason="../shared/fixtures/parity is missing")
core = vs.core


def noise_clip(w: int, h: int, n: int, fmt: int = vs.RGBS, seed: int = 0) -> vs.VideoNode:
    """Random frames (seeded per frame) with a custom property and a scene-change flag to check props survive."""
    blank = core.std.BlankClip(
        format=vs.RGBS if fmt in (vs.RGBS, vs.RGBH) else vs.GRAYS, width=w, height=h, length=n, keep=True
    )
    planes = blank.format.num_planes

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        data = np.random.default_rng((seed, n)).random((planes, h, w), dtype=np.float32)
        props = dict(f.props)
        props.update(src_index=n, _SceneChangePrev=int(n == 1), label="keep-me")
        return tensor_to_frame(torch.from_numpy(data), f, props=props)

    clip = core.std.ModifyFrame(blank, blank, fill)
    if fmt == vs.RGBH:
        clip = core.resize.Point(clip, format=vs.RGBH)
    return clip


def frame_array(frame: vs.VideoFrame) -> np.ndarray:
    return np.stack([np.asarray(frame[p]) for p in range(frame.format.num_planes)]).astype(np.float32)


def reference(model_path: Path, clip: vs.VideoNode, n: int, dtype: torch.dtype = torch.float32, **kw) -> np.ndarray:
    model = load_model(str(model_path)).to(dtype)
    x = frame_to_tensor(clip.get_frame(n)).to(dtype)
    with torch.no_grad():
        return restore_image(model, x, **kw).float().numpy()


@pytest.mark.parametrize(("func", "path", "w", "h"), [(SwinIR, SWINIR, 37, 29), (Uformer, UFORMER, 70, 52)])
def test_rgbs_equals_restore_image_and_keeps_props(func, path: Path, w: int, h: int) -> None:
    clip = noise_clip(w, h, 2)
    out = func(clip, model=str(path), attention="exact", device="cpu")
    scale = 2 if func is SwinIR else 1
    assert (out.width, out.height, out.num_frames, out.format.id) == (w * scale, h * scale, 2, vs.RGBS)
    for n in range(2):
        f = out.get_frame(n)
        got = frame_array(f)
        want = reference(path, clip, n)
        assert np.abs(got - want).max() <= 1e-5
        assert f.props["src_index"] == n and f.props["label"] == "keep-me"
        assert f.props["_SceneChangePrev"] == int(n == 1)
        assert f.props["nystra_model"] == path.name
        assert f.props["nystra_attention"] == "exact"
        assert f.props["nystra_device"] == "cpu"


@pytest.mark.parametrize("native_bf16", [False, True])
def test_rgbh_runs_in_half_format_and_matches_the_policy_dtype(
    native_bf16: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native_bf16)
    clip = noise_clip(33, 25, 1, fmt=vs.RGBH)
    out = SwinIR(clip, model=str(SWINIR), attention="exact", device="cpu")
    assert out.format.id == vs.RGBH
    f = out.get_frame(0)
    assert np.asarray(f[0]).dtype == np.float16
    got = frame_array(f)
    if native_bf16:  # bf16 compute, as restore_image gives it; bf16 values are exact in fp16
        want = reference(SWINIR, clip, 0, dtype=torch.bfloat16)
        assert np.abs(got - want).max() <= 2**-7 * max(1.0, float(np.abs(want).max()))  # one bf16 ulp
        assert np.abs(got - reference(SWINIR, clip, 0)).max() > 2e-3  # really ran in bf16
    else:  # fp16 input widened to fp32
        want = reference(SWINIR, clip, 0)
        assert np.abs(got - want).max() <= 2e-3  # fp16 output rounding (half an ulp at 2 is 1e-3)


def test_tiling_equals_restore_image_with_the_same_tiles() -> None:
    clip = noise_clip(40, 36, 1)
    out = SwinIR(clip, model=str(SWINIR), attention="exact", device="cpu", tile=[24, 20], tile_overlap=6)
    got = frame_array(out.get_frame(0))
    want = reference(SWINIR, clip, 0, tile=(24, 20), tile_overlap=6)
    assert np.abs(got - want).max() <= 1e-5
    untiled = reference(SWINIR, clip, 0)
    assert np.abs(got - untiled).max() > 1e-4  # tiles really were used


def test_gray_clip_with_gray_model() -> None:
    clip = noise_clip(32, 24, 1, fmt=vs.GRAYS)
    out = SwinIR(clip, model=str(GRAY), attention="exact", device="cpu")
    assert out.format.id == vs.GRAYS and (out.width, out.height) == (32, 24)
    got = frame_array(out.get_frame(0))
    assert np.abs(got - reference(GRAY, clip, 0)).max() <= 1e-5


def test_nystra_attention_equals_patched_model() -> None:
    clip = noise_clip(48, 40, 1)
    out = SwinIR(clip, model=str(SWINIR), attention="nystra", landmarks=16, iters=2, window=16, device="cpu")
    assert out.get_frame(0).props["nystra_attention"] == "nystra"
    model = patch_attention(load_model(str(SWINIR)), PnPNystra(16, 2, 5.0, pinv_init="matrix"), window=16)
    with torch.no_grad():
        want = restore_image(model, frame_to_tensor(clip.get_frame(0))).numpy()
    got = frame_array(out.get_frame(0))
    assert np.abs(got - want).max() <= 1e-5
    exact = reference(SWINIR, clip, 0)
    assert np.abs(got - exact).max() > 1e-4  # the attention really changed


def test_nystra_defaults_at_the_trained_window_use_six_iterations_and_plain_exp() -> None:
    clip = noise_clip(48, 40, 1)
    got = frame_array(SwinIR(clip, model=str(SWINIR), attention="nystra", device="cpu").get_frame(0))
    model = patch_attention(load_model(str(SWINIR)), PnPNystra(16, 6, None, pinv_init="matrix"))
    with torch.no_grad():
        want = restore_image(model, frame_to_tensor(clip.get_frame(0))).numpy()
    assert np.abs(got - want).max() <= 1e-5
    paper = patch_attention(load_model(str(SWINIR)), PnPNystra(16, 2, 5.0, pinv_init="matrix"))
    with torch.no_grad():
        other = restore_image(paper, frame_to_tensor(clip.get_frame(0))).numpy()
    assert np.abs(got - other).max() > 1e-5  # not the enlarged-window settings


def test_random_order_with_two_threads_matches_sequential_and_model_loads_once() -> None:
    old = core.num_threads
    core.num_threads = 2
    try:
        clip = noise_clip(30, 22, 8)
        cache = default_cache()
        before = cache.loads
        a = SwinIR(clip, model=str(SWINIR), attention="exact", device="cpu")
        b = SwinIR(clip, model=str(SWINIR).encode(), attention=b"exact", device=b"cpu")
        assert cache.loads - before <= 1  # second call reuses the cached model
        seq = {n: frame_array(a.get_frame(n)) for n in range(8)}
        order = list(range(8))
        random.Random(0).shuffle(order)
        futures = {n: b.get_frame_async(n) for n in order}
        for n in order:
            assert np.array_equal(frame_array(futures[n].result()), seq[n])
    finally:
        core.num_threads = old


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rgbs_and_rgbh() -> None:
    clip = noise_clip(48, 40, 1)
    want = reference(SWINIR, clip, 0)
    out = SwinIR(clip, model=str(SWINIR), attention="exact", device="cuda")
    f = out.get_frame(0)
    assert f.props["nystra_device"] == "cuda:0"
    assert np.abs(frame_array(f) - want).max() <= 1e-3  # TF32/cuDNN vs CPU
    half = SwinIR(core.resize.Point(clip, format=vs.RGBH), model=str(SWINIR), attention="exact", device="cuda")
    assert half.format.id == vs.RGBH
    assert np.abs(frame_array(half.get_frame(0)) - want).max() <= 2e-2  # fp16 compute
