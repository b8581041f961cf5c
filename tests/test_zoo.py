"""Model name resolution: paths, bundled defaults (models/zoo.json), the official-weights cache."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from vsnystra import zoo

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    models = tmp_path / "models"
    cache = tmp_path / "cache"
    models.mkdir()
    cache.mkdir()
    monkeypatch.setenv(zoo.MODELS_DIR_ENV, str(models))
    monkeypatch.setenv(zoo.WEIGHTS_DIR_ENV, str(cache))
    return models, cache


def test_existing_path_wins(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    f = tmp_path / "mine.pth"
    f.write_bytes(b"x")
    assert zoo.resolve_model(f) == f.resolve()
    assert zoo.resolve_model(str(f)) == f.resolve()


def test_missing_path_error(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(zoo.ModelNotFoundError, match="does not exist"):
        zoo.resolve_model(str(tmp_path / "nope.pth"))


def test_bundled_from_index_and_plain_file(dirs: tuple[Path, Path]) -> None:
    models, _ = dirs
    (models / "a_file.pth").write_bytes(b"a")
    (models / "loose.pth").write_bytes(b"b")
    index = {
        "rvrt-denoise-small": {"file": "a_file.pth", "arch": "rvrt", "task": "denoise", "sha256": None, "card": "c.md"}
    }
    (models / "zoo.json").write_text(json.dumps(index))
    assert zoo.resolve_model("rvrt-denoise-small") == models / "a_file.pth"
    assert zoo.resolve_model("loose") == models / "loose.pth"
    b = zoo.bundled_models()["rvrt-denoise-small"]
    assert (b.arch, b.task, b.card) == ("rvrt", "denoise", models / "c.md")


def test_bundled_listed_but_missing(dirs: tuple[Path, Path]) -> None:
    models, _ = dirs
    (models / "zoo.json").write_text(json.dumps({"gone": {"file": "gone.pth"}}))
    with pytest.raises(zoo.ModelNotFoundError, match=r"gone\.pth is missing"):
        zoo.resolve_model("gone")


def test_bad_index(dirs: tuple[Path, Path]) -> None:
    models, _ = dirs
    (models / "zoo.json").write_text(json.dumps({"x": {"arch": "rvrt"}}))
    with pytest.raises(ValueError, match="'file'"):
        zoo.resolve_model("x")


def test_official_cached_and_missing(dirs: tuple[Path, Path]) -> None:
    _, cache = dirs
    with pytest.raises(zoo.ModelNotFoundError, match="vsnystra weights download rvrt-denoise-davis"):
        zoo.resolve_model("rvrt-denoise-davis")
    f = cache / "006_RVRT_videodenoising_DAVIS_16frames.pth"
    f.write_bytes(b"w")
    assert zoo.resolve_model("rvrt-denoise-davis") == f
    assert zoo.available_models()["rvrt-denoise-davis"] == "downloaded"
    with pytest.raises(zoo.ModelNotFoundError, match="weights import uformer-b-sidd"):
        zoo.resolve_model("uformer-b-sidd")


def test_unknown_name_lists_choices(dirs: tuple[Path, Path]) -> None:
    with pytest.raises(zoo.ModelNotFoundError, match="swinir-classical-x2"):
        zoo.resolve_model("no-such-model")


def test_default_names() -> None:
    assert zoo.DEFAULT_MODELS == {
        "RVRT": "rvrt-denoise-small",
        "SwinIR": "swinir-x2-small",
        "Uformer": "uformer-denoise-small",
    }


def test_repo_bundled_models_match_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real models/ folder: every zoo.json entry exists and matches its sha256 when one is given."""
    monkeypatch.delenv(zoo.MODELS_DIR_ENV, raising=False)
    if not (REPO / "models" / "zoo.json").is_file():
        pytest.skip("models/zoo.json not added yet")
    for name, m in zoo.bundled_models().items():
        assert m.file.is_file(), name
        if m.sha256:
            assert hashlib.sha256(m.file.read_bytes()).hexdigest() == m.sha256, name
