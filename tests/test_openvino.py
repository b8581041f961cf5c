"""The OpenVINO back-end: equal to eager within 1e-5, one compile per input shape, device="openvino" settings."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from tiny_models import tiny_swinir

from vsnystra.archs.registry import load_model
from vsnystra.runtime.image import restore_image
from vsnystra.runtime.openvino import OpenVINOModel, with_backend
from vsnystra.runtime.settings import Options, SettingsError, resolve
from vsnystra.zoo import resolve_model

needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None or importlib.util.find_spec("onnxscript") is None,
    reason="needs the openvino and export extras",
)


@needs_openvino
def test_tiles_of_one_shape_compile_once_and_match_eager() -> None:
    model = tiny_swinir()
    ov = with_backend(model, "openvino")
    assert isinstance(ov, OpenVINOModel) and with_backend(model, "openvino") is ov  # one wrapper per model
    x = torch.rand(3, 40, 28)
    with torch.no_grad():
        ref = restore_image(model, x, tile=16, tile_overlap=4)
        got = restore_image(ov, x, tile=16, tile_overlap=4)
        again = restore_image(ov, x, tile=16, tile_overlap=4)
    assert ov.compiles == 1  # every tile is padded to the same shape
    assert (got - ref).abs().max().item() < 1e-5
    assert torch.equal(got, again)


@needs_openvino
@pytest.mark.slow
@pytest.mark.parametrize(("name", "side"), [("swinir-x2-small", 24), ("uformer-denoise-small", 72)])
def test_bundled_models_match_eager(name: str, side: int) -> None:
    model = load_model(str(resolve_model(name)))
    x = torch.rand(3, side, side)
    with torch.no_grad():
        ref = restore_image(model, x)
        got = restore_image(with_backend(model, "openvino"), x)
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() < 1e-5


@needs_openvino
def test_device_openvino_resolves_to_exact_fp32_cpu() -> None:
    s = resolve("nystra.SwinIR", Options(model="swinir-x2-small", device="openvino", half=True))
    assert (s.backend, s.device.type, s.dtype, s.attention_name) == ("openvino", "cpu", torch.float32, "exact")
    assert resolve("nystra.SwinIR", Options(model="swinir-x2-small", device="cpu")).backend == "torch"
    rvrt = resolve("nystra.RVRT", Options(model="rvrt-denoise-small", device="openvino"))
    assert (rvrt.backend, rvrt.attention_name) == ("openvino", "exact")  # video models run too (one graph per chunk)


def test_device_openvino_rejects_what_it_cannot_run() -> None:
    with pytest.raises(SettingsError, match='attention="nystra"'):
        resolve("nystra.SwinIR", Options(model="swinir-x2-small", device="openvino", attention="nystra"))


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        with_backend(tiny_swinir(), "tensorrt")


@needs_openvino
def test_both_front_ends_wrap_the_model_for_openvino() -> None:
    pytest.importorskip("vapoursynth")
    from vsnystra.cli.model import load
    from vsnystra.vs.filters import _load

    loaded = load(Options(model="swinir-x2-small", device="openvino"))
    assert isinstance(loaded.model, OpenVINOModel) and loaded.model.compiles == 0  # compiled on the first frame
    s = resolve("nystra.SwinIR", Options(model="swinir-x2-small", device="openvino"))
    net, info, _ = _load(s, "SwinIR")
    assert net is loaded.model and info.arch == "swinir"  # one wrapper per cached model: its compiles are shared
