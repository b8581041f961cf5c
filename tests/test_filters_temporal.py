"""RVRT's chunk scheduler inside VapourSynth, with a cheap stand-in for the model (no weights needed).

The stand-in output of a frame depends on every frame of its chunk and on the chunk's start, so any change in
chunk boundaries, blending or frame order shows up in the pixels.
"""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest
import torch
import vapoursynth as vs

from vsnystra.runtime.video import chunk_plan
from vsnystra.vs.filters import modify_frames
from vsnystra.vs.frames import frames_to_tensor, tensor_to_frame
from vsnystra.vs.temporal import ChunkCache, SceneCuts, TemporalRestorer

W, H = 24, 16


def make_clip(core: vs.Core, n: int, seed: int = 0) -> vs.VideoNode:
    """An RGBS clip whose frame i holds random data seeded by (seed, i)."""
    blank = core.std.BlankClip(format=vs.RGBS, width=W, height=H, length=n, keep=True)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        data = np.random.default_rng((seed, n)).random((3, H, W), dtype=np.float32)
        return tensor_to_frame(torch.from_numpy(data), f, props={"frame_no": n})

    return core.std.ModifyFrame(blank, blank, fill)


def with_cut(clip: vs.VideoNode, k: int, prop: str = "_SceneChangePrev") -> vs.VideoNode:
    """Mark a scene change between k-1 and k (on frame k with _SceneChangePrev, or k-1 with _SceneChangeNext)."""
    j = k if prop == "_SceneChangePrev" else k - 1
    return clip[:j] + clip[j].std.SetFrameProps(**{prop: 1}) + clip[j + 1 :]


class Recorder:
    """Fake model: out = 0.5·frames + 0.5·chunk mean + 0.001·(global index of the chunk's first frame)."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        with self.lock:
            self.calls.append(frames.shape[0])
        first = float(frames[0, 0, 0, 0])
        return 0.5 * frames + 0.5 * frames.mean(dim=0, keepdim=True) + 0.001 * first


def build(clip: vs.VideoNode, *, chunk: int = 6, overlap: int = 2, capacity: int = 3, cuts: bool = True):
    runner = Recorder()
    restorer = TemporalRestorer(
        clip,
        runner=runner,
        loader=lambda frames: frames_to_tensor(frames),
        chunk=chunk,
        overlap=overlap,
        capacity=capacity,
        scene_cuts=cuts,
    )

    def make(n: int, template: vs.VideoFrame, src: vs.VideoFrame) -> vs.VideoFrame:
        return tensor_to_frame(restorer.frame(n), template, props=dict(src.props))

    out = clip.std.BlankClip(keep=True)
    return modify_frames(clip, out, make), restorer, runner


def read_all(node: vs.VideoNode, order: list[int] | None = None) -> dict[int, np.ndarray]:
    order = list(range(node.num_frames)) if order is None else order
    futures = [(i, node.get_frame_async(i)) for i in order]
    return {i: np.stack([np.asarray(f.result()[p]) for p in range(3)]).copy() for i, f in futures}


def reference(clip: vs.VideoNode, chunk: int, overlap: int) -> np.ndarray:
    """The same computation done directly on the whole tensor with the official chunk plan (no VapourSynth)."""
    x = frames_to_tensor([clip.get_frame(i) for i in range(clip.num_frames)])
    out = torch.zeros_like(x)
    count = torch.zeros(x.shape[0])
    runner = Recorder()
    for a, b in chunk_plan(x.shape[0], chunk, overlap):
        out[a:b] += runner(x[a:b])
        count[a:b] += 1
    return (out / count.view(-1, 1, 1, 1)).numpy()


@pytest.fixture
def core() -> vs.Core:
    c = vs.core.core if hasattr(vs.core, "core") else vs.core
    old = c.num_threads
    c.num_threads = 2
    yield c
    c.num_threads = old


def test_sequential_matches_direct_computation(core: vs.Core) -> None:
    clip = make_clip(core, 23)
    node, _, _ = build(clip, chunk=6, overlap=2)
    got = read_all(node)
    ref = reference(clip, 6, 2)
    for i in range(23):
        np.testing.assert_allclose(got[i], ref[i], atol=1e-6, rtol=0)


def test_random_order_two_threads_bit_identical_and_chunks_once(core: vs.Core) -> None:
    clip = make_clip(core, 30)
    seq_node, _, _ = build(clip, capacity=100)
    seq = read_all(seq_node)
    order = list(range(30))
    random.Random(1).shuffle(order)
    node, restorer, _ = build(clip, capacity=100)
    got = read_all(node, order)
    for i in range(30):
        assert np.array_equal(got[i], seq[i]), i
    computed = restorer.cache.computed
    assert len(computed) == len(set(computed)), "a chunk was computed twice"
    assert sorted(computed) == chunk_plan(30, 6, 2)


def test_small_cache_is_bounded_and_still_identical(core: vs.Core) -> None:
    clip = make_clip(core, 26)
    seq = read_all(build(clip, capacity=100)[0])
    node, restorer, _ = build(clip, capacity=1)
    order = list(range(26))
    random.Random(2).shuffle(order)
    got = read_all(node, order)
    assert len(restorer.cache) <= 1
    for i in range(26):
        assert np.array_equal(got[i], seq[i]), i


@pytest.mark.parametrize("prop", ["_SceneChangePrev", "_SceneChangeNext"])
def test_scene_change_equals_halves_processed_apart(core: vs.Core, prop: str) -> None:
    k = 11
    clip = make_clip(core, 25)
    cut = with_cut(clip, k, prop)
    order = list(range(25))
    random.Random(3).shuffle(order)
    got = read_all(build(cut)[0], order)
    first = read_all(build(clip[:k])[0])
    second = read_all(build(clip[k:])[0])
    for i in range(25):
        want = first[i] if i < k else second[i - k]
        assert np.array_equal(got[i], want), i
    # without honouring cuts the frames near the cut differ (the test can fail)
    mixed = read_all(build(cut, cuts=False)[0])
    assert any(not np.array_equal(mixed[i], got[i]) for i in range(k - 3, k + 3))


def test_short_segments_and_single_frame_shots(core: vs.Core) -> None:
    clip = make_clip(core, 12)
    cut = with_cut(with_cut(clip, 5), 6)  # shot [5, 6) has one frame
    got = read_all(build(cut)[0])
    one = read_all(build(clip[5:6])[0])
    assert np.array_equal(got[5], one[0])


def test_scene_cut_lookup_is_lazy(core: vs.Core) -> None:
    clip = with_cut(make_clip(core, 200), 150)
    cuts = SceneCuts(clip)
    assert cuts.segment_start(10) == 0
    assert cuts.segment_end_within(10, 6) is None
    assert cuts.reads <= 20
    assert cuts.segment_start(160) == 150
    assert cuts.segment_end_within(140, 12) == 150


def test_chunk_cache_computes_once_under_contention() -> None:
    cache = ChunkCache(2)
    calls: list[int] = []
    gate = threading.Event()

    def compute() -> torch.Tensor:
        calls.append(1)
        gate.wait(1.0)
        return torch.ones(1)

    threads = [threading.Thread(target=cache.get, args=((0, 4), compute)) for _ in range(4)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    assert len(calls) == 1
    for span in [(4, 8), (8, 12), (12, 16)]:
        cache.get(span, lambda: torch.zeros(1))
    assert len(cache) == 2


@pytest.mark.parametrize("threads", [1, 4])
def test_any_thread_count_gives_the_same_frames(threads: int) -> None:
    c = vs.core
    old = c.num_threads
    try:
        c.num_threads = 2
        clip = make_clip(c, 18, seed=7)
        seq = read_all(build(clip)[0])
        c.num_threads = threads
        order = list(range(18))
        random.Random(threads).shuffle(order)
        got = read_all(build(clip)[0], order)
    finally:
        c.num_threads = old
    for i in range(18):
        assert np.array_equal(got[i], seq[i]), i
