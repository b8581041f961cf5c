"""Full-size official SwinIR / Uformer key manifests (../shared/fixtures/keys) and load_model's error messages.

The manifests list every key, shape and dtype of the released checkpoints; a state dict of meta tensors built from
them must load strictly into the model whose hyper-parameters load_model detects (no weights are materialised).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from vsnystra import load_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
KEYS = SHARED / "fixtures" / "keys"
PARITY = SHARED / "fixtures" / "parity"
MANIFESTS = sorted([*KEYS.glob("swinir_*.txt"), *KEYS.glob("uformer_*.txt")]) if KEYS.is_dir() else []


def _manifest(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.dtype]]:
    """(container-wrapped meta state dict, constructor, dtypes) from a manifest file."""
    container = "params"
    ctor: dict[str, Any] = {}
    sd: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for line in path.read_text().splitlines():
        if line.startswith("# container:"):
            container = line.split(":", 1)[1].split()[0]
        elif line.startswith("# constructor:"):
            ctor = json.loads(line.split(":", 1)[1])
        elif line and not line.startswith("#"):
            key, shape, dtype = line.split("\t")
            dtypes[key] = getattr(torch, dtype)
            sd[key] = torch.empty(json.loads(shape), dtype=dtypes[key], device="meta")
    return {container: sd, "epoch": 1}, ctor, dtypes  # type: ignore[return-value]


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.stem for p in MANIFESTS])
def test_manifest_loads_strictly(path: Path) -> None:
    ckpt, ctor, dtypes = _manifest(path)
    model = load_model(ckpt)
    info = model.info
    hp = info.hyperparameters
    for key, value in ctor.items():
        got = hp[key]
        assert (list(got) if isinstance(got, (list, tuple)) else got) == value, f"{key}: {got} != {value}"
    state = model.state_dict()
    strip = "module." if "state_dict" in ckpt else ""
    assert [strip + k for k in state] == list(dtypes), "keys or their order differ"
    for key, tensor in state.items():
        ref = ckpt.get("params", ckpt.get("params_ema", ckpt.get("state_dict")))[strip + key]
        assert tuple(tensor.shape) == tuple(ref.shape), key
        assert tensor.dtype == dtypes[strip + key], key
    if info.arch == "swinir":
        assert info.scale == ctor["upscale"] and info.window == (ctor["window_size"],) * 2
    else:
        assert info.square and info.multiple_of == 128


def test_swinir_variants_named() -> None:
    names = {}
    for path in MANIFESTS:
        if path.stem.startswith("swinir"):
            names[path.stem] = load_model(_manifest(path)[0]).info.variant
    if not names:
        pytest.skip("no manifests")
    assert names["swinir_M_classicalSR_x2_s64w8"] == "classical_sr"
    assert names["swinir_S_lightweightSR_x2"] == "lightweight_sr"
    assert names["swinir_M_realSR_x4"] == "real_sr"
    assert names["swinir_M_colorDN_s128w8"] == "color_dn"
    assert names["swinir_M_colorCAR_s126w7"] == "car"


def test_uformer_img_size_override_turns_bottleneck_shift_on() -> None:
    path = KEYS / "uformer_B.txt"
    if not path.exists():
        pytest.skip("no manifest")
    default = load_model(_manifest(path)[0])
    big = load_model(_manifest(path)[0], img_size=256)
    assert [b.shift for b in default.conv.blocks] == [0, 0]
    assert [b.shift for b in big.conv.blocks] == [0, 4]


# ---- errors ---------------------------------------------------------------------------------------------------


def _small_swinir() -> dict[str, torch.Tensor]:
    return torch.load(PARITY / "swinir_classical_x2.pth", weights_only=True)["params"]


def test_missing_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        load_model(missing)


def test_truncated_file(tmp_path: Path) -> None:
    data = (PARITY / "swinir_classical_x2.pth").read_bytes()
    bad = tmp_path / "half.pth"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"could not read checkpoint .*half\.pth.*truncated or corrupt"):
        load_model(bad)


def test_corrupt_file(tmp_path: Path) -> None:
    bad = tmp_path / "noise.pth"
    bad.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(ValueError, match="could not read checkpoint") as err:
        load_model(bad)
    assert "weights_only" not in str(err.value)  # torch's advice to load unsafely is never passed on


def test_unknown_architecture() -> None:
    with pytest.raises(ValueError, match=r"unrecognised checkpoint: found 2 tensors.*expected one of \['swinir'"):
        load_model({"body.0.weight": torch.zeros(4, 3, 3, 3), "tail.weight": torch.zeros(3, 4, 1, 1)})


def test_missing_key_named_with_closest_variant() -> None:
    sd = _small_swinir()
    del sd["layers.1.residual_group.blocks.0.mlp.fc2.bias"]
    with pytest.raises(ValueError, match=r"1 missing key\(s\): layers\.1\.residual_group\.blocks\.0\.mlp\.fc2\.bias"):
        load_model({"params": sd})
    with pytest.raises(ValueError, match="closest released configuration: 001 classicalSR"):
        load_model({"params": sd})


def test_mismatched_shape_and_unexpected_key() -> None:
    sd = _small_swinir()
    sd["conv_last.weight"] = torch.zeros(3, 64, 5, 5)
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"unexpected key\(s\): extra\.weight.*conv_last\.weight: checkpoint"):
        load_model(sd)


def test_fp16_checkpoint_and_module_prefix_load() -> None:
    sd = _small_swinir()
    half = {"state_dict": {"module." + k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}}
    model = load_model(half)
    assert next(model.parameters()).dtype == torch.float32
    ref = load_model({"params": sd})
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        diff = (model(x) - ref(x)).abs().max().item()
    assert 0 < diff < 2e-2  # fp16 rounding of the weights only


def test_attn_mask_of_any_training_size_loads() -> None:
    """Masks stored for another img_size (e.g. s48 vs s64) load: img_size is read from their shape."""
    sd = _small_swinir()
    model = load_model(sd)
    assert model.info.hyperparameters["img_size"] == 48
    # forward at a size other than img_size computes (and caches) the mask for that size
    with torch.no_grad():
        model(torch.rand(1, 3, 24, 40))
        built = dict(model.masks._store)
        model(torch.rand(1, 3, 24, 40))
    assert model.masks._store.keys() == built.keys()  # nothing rebuilt on the second forward
    assert all(model.masks._store[k] is v for k, v in built.items())
    masks = [v for v in built.values() if isinstance(v, torch.Tensor)]
    assert [tuple(m.shape) for m in masks] == [(15, 64, 64)]  # 3x5 windows of the 24x40 input


# ---- detection round trips over the configuration space (tiny models) --------------------------------------


@pytest.mark.parametrize(
    "cfg",
    [
        {"upsampler": "pixelshuffle", "upscale": 3},
        {"upsampler": "pixelshuffle", "upscale": 8},
        {"upsampler": "pixelshuffledirect", "upscale": 4},
        {"upsampler": "nearest+conv", "upscale": 2},
        {"upsampler": "nearest+conv", "upscale": 4, "resi_connection": "3conv"},
        {"upsampler": "", "upscale": 1, "in_chans": 1, "window_size": 7, "img_size": 28, "img_range": 255.0},
    ],
)
def test_swinir_hyperparameters_round_trip(cfg: dict[str, Any]) -> None:
    from vsnystra.archs.swinir import SwinIR

    full = {"img_size": 32, "embed_dim": 16, "depths": [2, 1], "num_heads": [2, 4], "window_size": 8} | cfg
    torch.manual_seed(0)
    src = SwinIR(**full).eval()
    model = load_model({"params": src.state_dict()})
    for key, value in full.items():
        assert model.info.hyperparameters[key] == value, key
    x = torch.rand(1, full.get("in_chans", 3), 14, 17)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x))
    assert model(x).shape[-2:] == (14 * full["upscale"], 17 * full["upscale"])


@pytest.mark.parametrize("cfg", [{"token_projection": "conv"}, {"token_mlp": "mlp", "modulator": False}])
def test_uformer_hyperparameters_round_trip(cfg: dict[str, Any]) -> None:
    from vsnystra.archs.uformer import Uformer

    full = {"embed_dim": 4, "depths": [1, 2, 1, 1, 2, 1, 1, 2, 1], "num_heads": [1, 1, 2, 2, 4, 4, 2, 2, 1]} | cfg
    torch.manual_seed(0)
    src = Uformer(**full).eval()
    model = load_model({"epoch": 3, "state_dict": {"module." + k: v for k, v in src.state_dict().items()}})
    for key, value in full.items():
        assert model.info.hyperparameters[key] == value, key
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x))


def test_forward_under_inference_mode_leaves_state_dict_alone() -> None:
    model = load_model(PARITY / "uformer_b_small.pth")
    before = list(model.state_dict())
    with torch.inference_mode():
        model(torch.rand(1, 3, 128, 128))
    with torch.no_grad():
        model(torch.rand(1, 3, 128, 128))
    assert list(model.state_dict()) == before
