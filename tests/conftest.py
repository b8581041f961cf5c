"""Shared pytest fixtures and markers (small and generic; other test modules may import the constants).

``../shared`` lives next to the checkout (CI clones elsewhere with shared/ beside the clone); it is never copied
into the repository.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
FIXTURES_DIR = SHARED_DIR / "fixtures"
PARITY_DIR = FIXTURES_DIR / "parity"
DATA_DIR = SHARED_DIR / "data"
MANIFEST_PATH = REPO_ROOT / "plugin_manifest" / "nystra.json"


_OPENVINO_CACHE: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """The suite runs on the torch back-end unless a test asks for another (backend="auto" would pick OpenVINO
    for the bundled image models where it is installed); compiled OpenVINO models go to a temporary folder, never
    the user's cache. Set before collection, so modules that copy os.environ for subprocesses (vspipe, the CLI)
    see both; an explicit VSNYSTRA_BACKEND in the caller's environment is kept."""
    os.environ.setdefault("VSNYSTRA_BACKEND", "torch")
    if "VSNYSTRA_OPENVINO_CACHE" not in os.environ:
        _OPENVINO_CACHE.append(tempfile.mkdtemp(prefix="vsnystra-test-openvino-"))
        os.environ["VSNYSTRA_OPENVINO_CACHE"] = _OPENVINO_CACHE[0]


def pytest_unconfigure(config: pytest.Config) -> None:
    for folder in _OPENVINO_CACHE:
        shutil.rmtree(folder, ignore_errors=True)


def _existing(path: Path) -> Path:
    if not path.is_dir():
        pytest.fail(f"{path} is missing: the shared/ folder must sit next to the checkout ({SHARED_DIR})")
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _existing(SHARED_DIR)


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return _existing(PARITY_DIR)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _existing(DATA_DIR)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``@pytest.mark.cuda`` tests (with a reason) when no CUDA device is visible; torch is imported only
    when such tests were collected."""
    cuda_items = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not cuda_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in cuda_items:
        item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seeded_torch() -> None:
    """Every test starts from the same global torch RNG state, so a failure reproduces (unseeded torch.rand inputs
    made a rounding-tolerance test flaky once)."""
    import torch

    torch.manual_seed(0)
