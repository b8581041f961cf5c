"""backend="auto" | "torch" | "openvino": the choice follows the shipped table, falls back to torch where OpenVINO
cannot run, and compiled models are reused from the disk cache."""

from __future__ import annotations

import importlib.util
import json
from importlib import resources
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_swinir

from vsnystra.archs.patch import patch_attention
from vsnystra.attention.specs import PnPNystra
from vsnystra.runtime import backends, openvino
from vsnystra.runtime.openvino import OpenVINOModel, with_backend
from vsnystra.runtime.settings import Options, SettingsError, resolve

needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None or importlib.util.find_spec("onnxscript") is None,
    reason="needs the openvino and export extras",
)
CPU = torch.device("cpu")


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, float]]:
    """A measured table with OpenVINO faster for SwinIR and slower for Uformer; OpenVINO 'installed'."""
    rows = {
        "swinir/auto": {"torch_ms": 100.0, "openvino_ms": 80.0},
        "swinir/exact": {"torch_ms": 100.0, "openvino_ms": 80.0},
        "uformer/auto": {"torch_ms": 100.0, "openvino_ms": 120.0},
    }
    monkeypatch.setattr(backends, "measured", lambda: {backends.device_class(): rows})
    monkeypatch.setattr(backends, "openvino_available", lambda: True)
    return rows


def backend_of(**kw: object) -> str:
    return resolve(
        "nystra.SwinIR" if "uformer" not in str(kw.get("model")) else "nystra.Uformer", Options(**kw)
    ).backend  # type: ignore[arg-type]


def test_auto_follows_the_table(table: dict[str, dict[str, float]]) -> None:
    assert backend_of(model="swinir-x2-small", device="cpu", backend="auto") == "openvino-auto"
    assert backend_of(model="swinir-x2-small", device="cpu", backend="auto", attention="exact") == "openvino-auto"
    assert backend_of(model="uformer-denoise-small", device="cpu", backend="auto") == "torch"  # measured slower
    assert backend_of(model="swinir-x2-small", device="cpu", backend="auto", attention="nystra") == "torch"  # no row
    assert backend_of(model="swinir-x2-small", device="cpu", backend="auto", window=16) == "torch"  # enlarged
    assert backend_of(model="swinir-x2-small", device="cpu", backend="torch") == "torch"
    assert resolve("nystra.RVRT", Options(model="rvrt-denoise-small", device="cpu", backend="auto")).backend == "torch"
    for device in (torch.device("cuda"), torch.device("cuda", 1)):  # CUDA stays torch
        assert backends.auto_backend("swinir", "image", "auto", enlarged_window=False, device=device,
                                     dtype=torch.float32) == "torch"  # fmt: skip
    half = backends.auto_backend("swinir", "image", "auto", enlarged_window=False, device=CPU, dtype=torch.bfloat16)
    assert half == "torch"


def test_auto_runs_video_models_through_openvino_where_measured_faster(
    table: dict[str, dict[str, float]],
) -> None:
    options = Options(model="rvrt-denoise-small", device="cpu", backend="auto")
    assert resolve("nystra.RVRT", options).backend == "torch"  # no row
    table["rvrt/auto"] = {"torch_ms": 100.0, "openvino_ms": 90.0}
    assert resolve("nystra.RVRT", options).backend == "openvino-auto"
    table["rvrt/auto"] = {"torch_ms": 100.0, "openvino_ms": 110.0}
    assert resolve("nystra.RVRT", options).backend == "torch"


def test_default_is_auto_unless_the_environment_says_otherwise(
    table: dict[str, dict[str, float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VSNYSTRA_BACKEND")
    assert backend_of(model="swinir-x2-small", device="cpu") == "openvino-auto"
    monkeypatch.setenv("VSNYSTRA_BACKEND", "torch")
    assert backend_of(model="swinir-x2-small", device="cpu") == "torch"


def test_auto_falls_back_to_torch_without_openvino(
    table: dict[str, dict[str, float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backends, "openvino_available", lambda: False)
    assert backend_of(model="swinir-x2-small", device="cpu", backend="auto") == "torch"
    with pytest.raises(SettingsError, match="needs the openvino package"):
        backend_of(model="swinir-x2-small", device="cpu", backend="openvino")


def test_backend_options_are_checked() -> None:
    with pytest.raises(SettingsError, match="backend must be one of"):
        backend_of(model="swinir-x2-small", backend="tensorrt")
    with pytest.raises(SettingsError, match='contradicts backend="torch"'):
        backend_of(model="swinir-x2-small", device="openvino", backend="torch")


def test_shipped_table_rows_are_measurements() -> None:
    data = json.loads(resources.files("vsnystra.runtime").joinpath("backends.json").read_text())
    assert set(data["machines"]) == set(data["devices"])
    for device, rows in data["devices"].items():
        assert device in backends.CPU_CLASSES
        assert "benchmarks/backends.py" in data["machines"][device]["command"]
        assert {"swinir/auto", "uformer/auto", "rvrt/auto"} <= set(rows)
        for key, row in rows.items():
            assert row["torch_ms"] > 0 and row["openvino_ms"] > 0, key
            faster = "openvino" if row["openvino_ms"] < row["torch_ms"] else "torch"
            assert backends.faster_backend(*key.split("/"), device=device) == faster


def test_device_classes_fall_back_to_the_nearest_measured_isa(monkeypatch: pytest.MonkeyPatch) -> None:
    wide, narrow = {"swinir/auto": {"torch_ms": 1.0, "openvino_ms": 2.0}}, {"uformer/auto": {"torch_ms": 1.0}}
    monkeypatch.setattr(backends, "measured", lambda: {"cpu-avx512": wide, "cpu-avx2": narrow})
    assert backends.device_class() == "cpu-" + torch.backends.cpu.get_cpu_capability().lower()
    assert backends.rows_for("cpu-avx512") is wide and backends.rows_for("cpu-avx2") is narrow
    assert backends.rows_for("cpu-default") is narrow  # no rows: the next wider ISA measured
    assert backends.rows_for("cpu-sve256") is wide  # an ISA outside the list: the widest class measured
    monkeypatch.setattr(backends, "measured", lambda: {"cpu-avx512": wide})
    assert backends.rows_for("cpu-avx2") is wide  # nothing narrower measured: the wider class


@needs_openvino
def test_disk_cache_skips_the_second_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_swinir()
    x = torch.rand(1, 3, 16, 16)
    first = OpenVINOModel(model, disk_cache=tmp_path)
    with torch.no_grad():
        ref, got = model(x), first(x)
    assert (first.exports, first.compiles) == (1, 1)
    assert (got - ref).abs().max().item() < 1e-4

    def no_export(*args: object, **kw: object) -> None:
        raise AssertionError("exported again despite the disk cache")

    monkeypatch.setattr(openvino, "write_onnx", no_export)
    second = OpenVINOModel(model, disk_cache=tmp_path)  # a new process would start like this: empty memory cache
    with torch.no_grad():
        again = second(x)
    assert (second.exports, second.compiles) == (0, 1)
    assert torch.equal(again, got)
    with torch.no_grad():
        next(model.parameters()).add_(0.01)  # other weights: another key, so a new export
    with pytest.raises(AssertionError, match="exported again"):
        OpenVINOModel(model, disk_cache=tmp_path)(x)


@needs_openvino  # the cache key names OpenVINO's version
def test_auto_runs_torch_when_the_model_cannot_be_exported(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = tiny_swinir()
    x = torch.rand(1, 3, 16, 16)

    def broken(*args: object, **kw: object) -> None:
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(openvino, "write_onnx", broken)
    auto = OpenVINOModel(model, fallback=True, disk_cache=None)
    with torch.no_grad():
        assert torch.equal(auto(x), model(x))
    assert auto.failed is not None and "unsupported operator" in caplog.text
    with pytest.raises(RuntimeError, match="unsupported operator"):
        OpenVINOModel(model, disk_cache=None)(x)  # backend="openvino" fails loudly
    refused = tiny_swinir()
    patch_attention(refused, PnPNystra(landmarks=4, iters=3, max_error=0.5))
    assert with_backend(refused, "openvino-auto") is refused  # cannot be exported at all: the torch model itself


@needs_openvino
def test_filters_take_the_backend_keyword() -> None:
    vs = pytest.importorskip("vapoursynth")
    import numpy as np

    from vsnystra.vs import filters

    clip = vs.core.std.BlankClip(format=vs.RGBS, width=24, height=16, length=1, color=[0.2, 0.5, 0.8])
    frames = [
        np.stack([np.asarray(f[p]) for p in range(3)])
        for f in (filters.SwinIR(clip, backend=b).get_frame(0) for b in ("torch", "openvino"))
    ]
    assert frames[0].shape == (3, 32, 48)
    assert np.abs(frames[0] - frames[1]).max() < 1e-4  # RVRT: tests/test_openvino_video.py
