"""The settings resolver: the filters and `vsnystra restore` reject the same bad settings with the same words, and
a bundled model's zoo defaults apply to both front ends unless the user sets the option."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import vapoursynth as vs

from vsnystra.archs.registry import architecture
from vsnystra.cli import main as cli_main
from vsnystra.cli import model as cli_model
from vsnystra.runtime import settings as S
from vsnystra.vs import filters

REPO = Path(__file__).resolve().parents[1]
PARITY = REPO.parent / "shared" / "fixtures" / "parity"
RVRT_DN = PARITY / "rvrt_denoise_small.pth"
RVRT_SR = PARITY / "rvrt_sr_small.pth"
SWINIR = PARITY / "swinir_classical_x2.pth"
core = vs.core

needs_fixtures = pytest.mark.skipif(not RVRT_DN.is_file(), reason="../shared/fixtures/parity is missing")

# (filter keywords, the same setting on the command line)
BAD = [
    ({"sigma": -1.0}, ["--sigma", "-1"]),
    ({"sigma": "loud"}, ["--sigma", "loud"]),
    ({"window": [2, "x"]}, ["--window", "2,x"]),
    ({"window": [2, 2, 64, 64]}, ["--window", "2,2,64,64"]),
    ({"attention": "naive"}, ["--attention", "naive"]),
    ({"attention": "pnp"}, ["--attention", "pnp"]),
    ({"attention": "exact", "landmarks": 16}, ["--attention", "exact", "--landmarks", "16"]),
    ({"iters": 65}, ["--iters", "65"]),
    ({"iters": 2.5}, ["--iters", "2.5"]),
    ({"landmarks": 0}, ["--landmarks", "0"]),
    ({"tile": [8, 8]}, ["--tile", "8x8"]),
    ({"tile": [60, 64]}, ["--tile", "60x64"]),
    ({"tile": [64, 64], "tile_overlap": [32]}, ["--tile", "64x64", "--tile-overlap", "32"]),
    ({"chunk": 7}, ["--chunk", "7"]),
    ({"chunk": 4, "chunk_overlap": 4}, ["--chunk", "4", "--chunk-overlap", "4"]),
    ({"device": "gpu"}, ["--device", "gpu"]),
]


def _filter_message(model: Path, kwargs: dict[str, object]) -> str:
    clip = core.std.BlankClip(format=vs.RGBS, width=136, height=136, length=2)
    with pytest.raises(vs.Error) as info:
        filters.RVRT(clip, model=str(model), **kwargs)
    text = str(info.value)
    assert text.startswith("nystra.RVRT: "), text
    return text.removeprefix("nystra.RVRT: ")


def _cli_message(model: Path, flags: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> str:
    src = tmp_path / "in.mkv"
    src.write_bytes(b"")  # never decoded: the settings are refused first
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="vsnystra"):
        rc = cli_main.main(["restore", str(src), "-o", str(tmp_path / "out"), "--model", str(model), *flags])
    assert rc == cli_main.EXIT_USAGE
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("vsnystra restore: "), errors
    return errors[0].removeprefix("vsnystra restore: ")


@needs_fixtures
@pytest.mark.parametrize(("kwargs", "flags"), BAD, ids=[" ".join(f) for _, f in BAD])
def test_filter_and_cli_reject_the_same_settings_with_the_same_words(
    kwargs: dict[str, object], flags: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from_filter = _filter_message(RVRT_DN, kwargs)
    from_cli = _cli_message(RVRT_DN, flags, tmp_path, caplog)
    assert from_filter == from_cli


@needs_fixtures
def test_sigma_for_a_model_without_one_is_refused_in_the_same_words(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from_filter = _filter_message(RVRT_SR, {"sigma": 5.0, "device": "cpu"})
    from_cli = _cli_message(RVRT_SR, ["--sigma", "5", "--device", "cpu"], tmp_path, caplog)
    assert from_filter == from_cli
    assert "sigma only applies to non-blind denoising models" in from_cli and "drop --sigma" in from_cli


def test_the_command_line_reads_values_as_the_filters_receive_them() -> None:
    args = cli_main.build_parser().parse_args(
        ["restore", "x.mkv", "--window", "2,64,64", "--tile", "256x128", "--sigma", "7.5", "--iters", "3"]
    )
    options = cli_model.model_options(args)
    assert options.window == [2, 64, 64] and options.tile == [256, 128]
    assert options.sigma == 7.5 and options.iters == 3 and options.attention is None


# ---------------------------------------------------------------- model-trained defaults


@pytest.fixture
def zoo_with_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A models folder with one bundled RVRT (a copy of the fixture) that carries chunk defaults."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(RVRT_DN, models / "tiny-rvrt.pth")
    index = {"tiny-rvrt": {"file": "tiny-rvrt.pth", "arch": "rvrt", "defaults": {"chunk": 6, "chunk_overlap": 1}}}
    (models / "zoo.json").write_text(json.dumps(index))
    monkeypatch.setenv("VSNYSTRA_MODELS_DIR", str(models))
    return models


@needs_fixtures
def test_bundled_defaults_apply_when_the_user_leaves_the_option_unset(zoo_with_defaults: Path) -> None:
    rvrt = architecture("rvrt")
    by_name = S.resolve("t", S.Options(model="tiny-rvrt"), arch=rvrt)
    assert (by_name.chunk, by_name.chunk_overlap) == (6, 1)
    by_path = S.resolve("t", S.Options(model=str(zoo_with_defaults / "tiny-rvrt.pth")))  # detected, same file
    assert by_path.arch is rvrt and (by_path.chunk, by_path.chunk_overlap) == (6, 1)
    explicit = S.resolve("t", S.Options(model="tiny-rvrt", chunk=8), arch=rvrt)
    assert (explicit.chunk, explicit.chunk_overlap) == (8, 1)  # the explicit argument wins, the rest still applies
    other = S.resolve("t", S.Options(model=str(RVRT_DN)), arch=rvrt)  # not a bundled model: the runtime's defaults
    assert (other.chunk, other.chunk_overlap, other.tile_overlap) == (16, 2, 20)


@needs_fixtures
def test_bundled_defaults_reach_the_filter_and_the_cli(
    zoo_with_defaults: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = core.std.BlankClip(format=vs.RGBS, width=136, height=136, length=8)
    _, restorer = filters.rvrt_with_restorer(clip, "tiny-rvrt", device="cpu")
    assert (restorer.chunk, restorer.overlap) == (6, 1)
    _, restorer = filters.rvrt_with_restorer(clip, "tiny-rvrt", device="cpu", chunk=4, chunk_overlap=2)
    assert (restorer.chunk, restorer.overlap) == (4, 2)

    seen: dict[str, object] = {}

    def fake_restore_video(model: object, frames: object, **kwargs: object) -> list[np.ndarray]:
        seen.update(kwargs)
        return []

    monkeypatch.setattr(cli_model, "restore_video", fake_restore_video)
    args = cli_main.build_parser().parse_args(["restore", "x.mkv", "--model", "tiny-rvrt", "--device", "cpu"])
    loaded = cli_model.load(cli_model.model_options(args))
    assert list(loaded.restorer(iter([]))) == []
    # without sigma the denoiser's noise level is estimated from the frames (here: flat grey plus sigma 10)
    noisy = 0.5 + np.random.default_rng(0).normal(0, 10 / 255, (3, 96, 96)).astype(np.float32)
    assert list(loaded.restorer(iter([noisy, noisy]))) == []
    assert (seen["chunk"], seen["chunk_overlap"]) == (6, 1)
    assert abs(float(seen["sigma"]) - 10) < 1


def test_unknown_zoo_default_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m.pth").write_bytes(b"x")
    (tmp_path / "zoo.json").write_text(json.dumps({"m": {"file": "m.pth", "defaults": {"colour": "red"}}}))
    monkeypatch.setenv("VSNYSTRA_MODELS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['colour'\]"):
        S.resolve("t", S.Options(model="m"), arch=architecture("rvrt"))


def test_the_real_bundled_rvrt_runs_with_its_zoo_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VSNYSTRA_MODELS_DIR", raising=False)
    zoo = json.loads((REPO / "models" / "zoo.json").read_text(encoding="utf-8"))
    rvrt = architecture("rvrt")
    defaults = zoo[rvrt.default_model].get("defaults", {})
    want = (defaults.get("chunk", 16), defaults.get("chunk_overlap", 2))
    s = S.resolve("t", S.Options(), arch=rvrt)  # the filter's default model
    assert s.model_path.name == zoo[rvrt.default_model]["file"]
    assert (s.chunk, s.chunk_overlap) == want
    assert S.resolve("t", S.Options(chunk=10), arch=rvrt).chunk == 10
    clip = core.std.BlankClip(format=vs.RGBS, width=136, height=136, length=8)
    _, restorer = filters.rvrt_with_restorer(clip, device="cpu")
    assert (restorer.chunk, restorer.overlap) == want
    args = cli_main.build_parser().parse_args(["restore", "x.mkv"])
    cli = S.resolve(cli_model.CALLER, cli_model.model_options(args))  # the CLI's default model
    assert cli.model_path == s.model_path and (cli.chunk, cli.chunk_overlap) == want


# ---------------------------------------------------------------- misleading messages (issue 20)


def _model_with_objects(tmp_path: Path, source: Path) -> Path:
    """A checkpoint that pickles an object besides its tensors (what torch suggests weights_only=False for)."""
    import argparse

    import torch

    path = tmp_path / "with-objects.pth"
    torch.save({"params": torch.load(source, weights_only=True), "args": argparse.Namespace(lr=1)}, path)
    return path


@needs_fixtures
@pytest.mark.parametrize(
    ("kwargs", "flags", "words"),
    [
        ({"window": [2, 4, 4]}, ["--window", "2,4,4"], "window [2, 4, 4] is smaller than the window [2, 8, 8]"),
        ({"window": [6, 16]}, ["--window", "6,16"], "use at least [8, 8]"),
        ({"window": [1, 8, 8]}, ["--window", "1,8,8"], "use at least [2, 8, 8]"),
    ],
)
def test_a_window_smaller_than_trained_is_refused_in_the_same_words(
    kwargs: dict[str, object], flags: list[str], words: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from_filter = _filter_message(RVRT_DN, {**kwargs, "device": "cpu"})
    assert from_filter == _cli_message(RVRT_DN, [*flags, "--device", "cpu"], tmp_path, caplog)
    assert words in from_filter and "leave window unset" in from_filter


@needs_fixtures
def test_swinir_window_smaller_than_trained_is_refused_and_larger_accepted() -> None:
    clip = core.std.BlankClip(format=vs.RGBS, width=64, height=64, length=1)
    with pytest.raises(vs.Error, match=r"window 3 is smaller than the window \[8, 8\] .* use at least 8"):
        filters.SwinIR(clip, model=str(SWINIR), window=3, device="cpu")
    assert filters.SwinIR(clip, model=str(SWINIR), window=16, device="cpu").width == 128


@needs_fixtures
def test_a_folder_and_a_checkpoint_with_objects_are_named_for_what_they_are(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copyfile(RVRT_DN, folder / "rvrt.pth")
    from_filter = _filter_message(folder, {})
    assert from_filter == _cli_message(folder, [], tmp_path, caplog)
    want = f"model {str(folder)!r} is a folder, not a checkpoint file; pass the .pth file inside it (it holds rvrt.pth)"
    assert from_filter == want
    objects = _model_with_objects(tmp_path, RVRT_DN)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="vsnystra"):
        rc = cli_main.main(["restore", str(tmp_path / "in.mkv"), "-o", str(tmp_path / "o"), "--model", str(objects)])
    assert rc == cli_main.EXIT_USAGE
    for message in (_filter_message(objects, {}), caplog.text):
        assert "weights_only" not in message and "argparse.Namespace" in message
        assert "torch.save(model.state_dict(), path)" in message


def _frames(node: vs.VideoNode) -> list[np.ndarray]:
    return [np.stack([np.asarray(f[p]) for p in range(f.format.num_planes)]) for f in node.frames()]


def _noise_clip(w: int, h: int, n: int) -> vs.VideoNode:
    clip = core.std.BlankClip(format=vs.RGBS, width=w, height=h, length=n)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:  # the same frame n on every request
        out = f.copy()
        rng = np.random.default_rng(n)
        for p in range(3):
            np.asarray(out[p])[:] = rng.random((h, w), dtype=np.float32)
        return out

    return core.std.ModifyFrame(clip, clip, fill)


def test_the_documented_edge_values_mean_what_the_readme_says() -> None:
    """tile=[0, 0] is no tiling; landmarks >= a window's tokens is exact attention; chunk >= the clip is one chunk."""
    image = _noise_clip(32, 32, 1)
    untiled = _frames(filters.SwinIR(image, device="cpu", attention="exact"))
    no_tile = _frames(filters.SwinIR(image, device="cpu", attention="exact", tile=[0, 0]))
    assert all(np.array_equal(a, b) for a, b in zip(untiled, no_tile, strict=True))
    every = filters.SwinIR(image, device="cpu", attention="nystra", landmarks=64)  # 8x8 windows: 64 tokens
    assert all(np.array_equal(a, b) for a, b in zip(untiled, _frames(every), strict=True))
    video = _noise_clip(64, 64, 4)
    whole = _frames(filters.RVRT(video, device="cpu", sigma=10.0, chunk=4, chunk_overlap=2))
    longer = _frames(filters.RVRT(video, device="cpu", sigma=10.0, chunk=40, chunk_overlap=2))
    assert all(np.array_equal(a, b) for a, b in zip(whole, longer, strict=True))
