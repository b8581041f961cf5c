"""nystra.RVRT against restore_video on the same frames; random access and 2 threads; scene cuts; RGBH + sigma.

Small RVRT fixtures on tiny frames keep this affordable on 2 CPU cores (a 4-frame chunk takes a few seconds).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
import vapoursynth as vs

from vsnystra.archs.registry import load_model
from vsnystra.runtime import device
from vsnystra.runtime.video import chunk_plan, restore_video
from vsnystra.vs.filters import RVRT, rvrt_with_restorer
from vsnystra.vs.frames import frames_to_tensor, tensor_to_frame

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PARITY = SHARED / "fixtures" / "parity"
SR = PARITY / "rvrt_sr_small.pth"
DN = PARITY / "rvrt_denoise_small.pth"

pytestmark = pytest.mark.skipif(not SR.is_file(), reason="../shared/fixtures/parity is missing")
core = vs.core
W, H, N = 36, 40, 6
KW = {"attention": "exact", "device": "cpu", "chunk": 4, "chunk_overlap": 2}


def smooth_clip(w: int, h: int, n: int, seed: int = 0, fmt: int = vs.RGBS) -> vs.VideoNode:
    """Frames of upsampled noise (so flows see structure), seeded per frame, with a custom prop."""
    blank = core.std.BlankClip(format=vs.RGBS, width=w, height=h, length=n, keep=True)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        g = torch.from_numpy(np.random.default_rng((seed, n)).random((1, 3, h // 4, w // 4), dtype=np.float32))
        img = torch.nn.functional.interpolate(g, size=(h, w), mode="bilinear", align_corners=False)[0]
        return tensor_to_frame(img, f, props={**dict(f.props), "src_index": n})

    clip = core.std.ModifyFrame(blank, blank, fill)
    return core.resize.Point(clip, format=fmt) if fmt != vs.RGBS else clip


def planes(frame: vs.VideoFrame) -> np.ndarray:
    return np.stack([np.asarray(frame[p]) for p in range(3)]).astype(np.float32)


@pytest.fixture(scope="module")
def clip() -> vs.VideoNode:
    return smooth_clip(W, H, N)


@pytest.fixture(scope="module")
def sequential(clip: vs.VideoNode) -> dict[int, np.ndarray]:
    out = RVRT(clip, model=str(SR), **KW)
    assert (out.width, out.height, out.num_frames, out.format.id) == (4 * W, 4 * H, N, vs.RGBS)
    frames = {}
    for n in range(N):
        f = out.get_frame(n)
        assert f.props["src_index"] == n and f.props["nystra_model"] == SR.name
        assert f.props["nystra_attention"] == "exact"
        frames[n] = planes(f)
    return frames


def test_equals_restore_video(clip: vs.VideoNode, sequential: dict[int, np.ndarray]) -> None:
    assert len(chunk_plan(N, 4, 2)) == 2  # frames 2 and 3 are blends of two chunks
    x = frames_to_tensor([clip.get_frame(i) for i in range(N)])
    with torch.no_grad():
        want = restore_video(load_model(str(SR)), x, chunk=4, chunk_overlap=2)
    for n in range(N):
        assert np.abs(sequential[n] - want[n].numpy()).max() <= 1e-5, n


def test_random_order_two_threads_bit_identical(clip: vs.VideoNode, sequential: dict[int, np.ndarray]) -> None:
    old = core.num_threads
    core.num_threads = 2
    try:
        node, restorer = rvrt_with_restorer(clip, str(SR), **KW)
        order = list(range(N))
        random.Random(5).shuffle(order)
        futures = {n: node.get_frame_async(n) for n in order}
        for n in order:
            assert np.array_equal(planes(futures[n].result()), sequential[n]), n
        assert sorted(restorer.cache.computed) == chunk_plan(N, 4, 2)  # each chunk once
    finally:
        core.num_threads = old


def test_scene_change_gives_the_halves_processed_apart(clip: vs.VideoNode) -> None:
    k, n_frames = 2, 4  # 2-frame shots keep it cheap; without the cut this would be one 4-frame chunk
    short = clip[:n_frames]
    cut = short[:k] + short[k].std.SetFrameProps(_SceneChangePrev=1) + short[k + 1 :]
    got = RVRT(cut, model=str(SR), **KW)
    first = RVRT(short[:k], model=str(SR), **KW)
    second = RVRT(short[k:], model=str(SR), **KW)
    for n in range(n_frames):
        want = first.get_frame(n) if n < k else second.get_frame(n - k)
        assert np.array_equal(planes(got.get_frame(n)), planes(want)), n


@pytest.mark.parametrize("native_bf16", [False, True])
def test_rgbh_denoiser_with_sigma(native_bf16: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: native_bf16)
    dtype = torch.float32  # RVRT keeps fp32 on CPUs even with native bf16 (compute_dtype)
    src = smooth_clip(136, 136, 2, seed=3, fmt=vs.RGBH)
    out = RVRT(src, model=str(DN), attention="exact", device="cpu", sigma=20.0, chunk=2, chunk_overlap=0)
    assert out.format.id == vs.RGBH and (out.width, out.height) == (136, 136)
    x = frames_to_tensor([src.get_frame(i) for i in range(2)]).to(dtype)
    with torch.no_grad():
        want = restore_video(load_model(str(DN)).to(dtype), x, chunk=2, chunk_overlap=0, sigma=20.0).float()
    tol = 4e-3  # fp16 rounding of the output
    for n in range(2):
        got = planes(out.get_frame(n))
        assert np.abs(got - want[n].numpy()).max() <= tol
