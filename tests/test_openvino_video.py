"""RVRT through OpenVINO: full-length chunks compile once per shape (the sigma map is a graph input), shorter chunks
run with torch, results within 1e-4 of torch; the filter and the CLI wrap RVRT with their chunk length.

One tiny random-weight RVRT denoiser, exported once at 2 frames of 136x136 (its flow minimum; about half a minute)
into this module's OpenVINO disk cache, and reused by every test here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import tiny_rvrt_denoiser

from vsnystra.archs.base import RestorationModel
from vsnystra.runtime import openvino
from vsnystra.runtime.backends import CACHE_DIR_ENV, cache_dir
from vsnystra.runtime.cache import default_cache
from vsnystra.runtime.openvino import AUTO_MAX_VIDEO_PIXELS, OpenVINOModel, with_backend
from vsnystra.runtime.settings import Options, Settings, resolve
from vsnystra.runtime.video import restore_video

needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None or importlib.util.find_spec("onnxscript") is None,
    reason="needs the openvino and export extras",
)
CHUNK = {"chunk": 2, "chunk_overlap": 0}


@pytest.fixture(scope="module", autouse=True)
def own_disk_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A disk cache of this module's own, so its export counts do not depend on earlier runs."""
    folder = tmp_path_factory.mktemp("openvino-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_DIR_ENV, str(folder))
        yield folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rvrt") / "tiny-rvrt-denoise.pth"
    torch.save({"params": tiny_rvrt_denoiser().state_dict()}, path)
    return path


def settings(checkpoint: Path, **kw: object) -> Settings:
    return resolve("nystra.RVRT", Options(model=str(checkpoint), **{"device": "cpu", **CHUNK, **kw}))  # type: ignore[arg-type]


def cached_model(s: Settings) -> RestorationModel:
    """The model the front ends load for ``s`` (the same object: the model cache is shared)."""
    model = default_cache().get(s.model_path, device=s.device, dtype=s.dtype, attention=s.attention)
    assert isinstance(model, RestorationModel)
    return model


def frames(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.rand(n, 3, 6, 8, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(g, size=(24, 32), mode="bilinear", align_corners=False)


@needs_openvino
def test_video_settings_take_openvino(checkpoint: Path) -> None:
    s = settings(checkpoint, device="openvino", attention="auto")
    assert (s.backend, s.device.type, s.dtype, s.attention_name, s.chunk) == ("openvino", "cpu", torch.float32,
                                                                              "exact", 2)  # fmt: skip


@needs_openvino
def test_full_chunks_compile_once_for_every_sigma_and_match_torch(checkpoint: Path) -> None:
    s = settings(checkpoint, backend="openvino")
    model = cached_model(s)
    ov = with_backend(model, "openvino", frames=2)
    assert isinstance(ov, OpenVINOModel) and with_backend(model, "openvino", frames=2) is ov
    x = frames(5)  # chunks [0, 2), [2, 4), [3, 5): all of 2 frames
    with torch.no_grad():
        for sigma in (10.0, 30.0):
            ref = restore_video(model, x, sigma=sigma, **CHUNK)
            got = restore_video(ov, x, sigma=sigma, **CHUNK)
            assert isinstance(ref, torch.Tensor) and isinstance(got, torch.Tensor)
            assert got.shape == ref.shape == (5, 3, 24, 32)
            assert (got - ref).abs().max().item() < 1e-4, sigma
    assert (ov.exports, ov.compiles) == (1, 1)  # one graph for every sigma: the noise map is an input


@needs_openvino
def test_a_new_process_reads_the_chunk_graph_from_disk(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = cached_model(settings(checkpoint, backend="openvino"))
    x = frames(2, seed=1)
    with torch.no_grad():
        first = restore_video(with_backend(model, "openvino", frames=2), x, sigma=20.0, **CHUNK)

    def no_export(*args: object, **kw: object) -> None:
        raise AssertionError("exported again despite the disk cache")

    monkeypatch.setattr(openvino, "write_onnx", no_export)
    fresh = OpenVINOModel(model, disk_cache=cache_dir(), frames=2)  # empty memory cache, as in a new process
    with torch.no_grad():
        again = restore_video(fresh, x, sigma=20.0, **CHUNK)
    assert (fresh.exports, fresh.compiles) == (0, 1)
    assert isinstance(first, torch.Tensor) and isinstance(again, torch.Tensor) and torch.equal(first, again)


def test_shorter_chunks_and_auto_sized_frames_run_with_torch(checkpoint: Path) -> None:
    model = cached_model(settings(checkpoint))
    four = OpenVINOModel(model, disk_cache=None, frames=4)
    x = frames(2)  # a 2-frame scene under a 4-frame chunk length: torch, nothing compiled
    with torch.no_grad():
        ref = restore_video(model, x, sigma=20.0, chunk=4, chunk_overlap=2)
        got = restore_video(four, x, sigma=20.0, chunk=4, chunk_overlap=2)
    assert isinstance(ref, torch.Tensor) and isinstance(got, torch.Tensor) and torch.equal(got, ref)
    assert (four.exports, four.compiles) == (0, 0)
    w = AUTO_MAX_VIDEO_PIXELS // (2 * 480)
    auto = OpenVINOModel(model, fallback=True, disk_cache=None, frames=2)
    assert auto.runs_openvino((1, 2, 4, 480, w)) and not auto.runs_openvino((1, 2, 4, 488, w))
    assert not auto.runs_openvino((1, 4, 4, 136, 136))  # not the chunk length
    forced = OpenVINOModel(model, disk_cache=None, frames=2)  # backend="openvino": any frame size
    assert forced.runs_openvino((1, 2, 4, 488, w))


@needs_openvino
def test_filter_and_cli_run_rvrt_through_openvino(checkpoint: Path) -> None:
    vs = pytest.importorskip("vapoursynth")
    from vsnystra.cli.model import load
    from vsnystra.vs import filters

    blank = vs.core.std.BlankClip(format=vs.RGBS, width=32, height=24, length=3, keep=True)
    x = frames(3, seed=2)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.asarray(out[p])[:] = x[n, p].numpy()
        return out

    clip = vs.core.std.ModifyFrame(blank, blank, fill)
    outs = {}
    for backend in ("torch", "openvino"):
        node = filters.RVRT(clip, model=str(checkpoint), backend=backend, sigma=15, device="cpu", **CHUNK)
        outs[backend] = np.stack(
            [np.stack([np.asarray(f[p]) for p in range(3)]) for f in (node.get_frame(n) for n in range(3))]
        )
    assert outs["torch"].shape == (3, 3, 24, 32)
    assert np.abs(outs["torch"] - outs["openvino"]).max() < 1e-4
    s = settings(checkpoint, backend="openvino")
    wrapped = with_backend(cached_model(s), "openvino", frames=2)
    assert isinstance(wrapped, OpenVINOModel) and wrapped.compiles == 1  # the filter used the shared wrapper
    loaded = load(Options(model=str(checkpoint), backend="openvino", device="cpu", sigma=15, **CHUNK))  # type: ignore[arg-type]
    assert loaded.model is wrapped and loaded.temporal == (2, 0)
    restored = list(loaded.restorer(iter(x.numpy())))
    assert np.abs(np.stack(restored) - outs["torch"]).max() < 1e-4
