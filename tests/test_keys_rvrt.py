"""Full-size official RVRT key manifests (../shared/fixtures/keys/rvrt_*.txt) load strictly, built on 'meta'."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
KEYS = SHARED / "fixtures" / "keys"
MANIFESTS = sorted(KEYS.glob("rvrt_*.txt")) if KEYS.is_dir() else []


def _manifest(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    sd: dict[str, torch.Tensor] = {}
    ctor: dict[str, object] = {}
    for line in path.read_text().splitlines():
        if line.startswith("# constructor:"):
            ctor = json.loads(line.split(":", 1)[1])
        if not line or line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")
        sd[key] = torch.empty(json.loads(shape), dtype=getattr(torch, dtype), device="meta")
    return sd, ctor


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.stem for p in MANIFESTS])
def test_manifest_loads_strictly(path: Path) -> None:
    from vsnystra import load_model

    sd, ctor = _manifest(path)
    model = load_model(sd)
    info = model.info
    assert info.arch == "rvrt"
    assert info.scale == ctor.get("upscale", 4)
    assert info.needs_sigma == bool(ctor.get("nonblind_denoising", False))
    assert info.task == ("sr" if info.scale == 4 else "denoise" if info.needs_sigma else "deblur")
    assert info.window == tuple(ctor.get("window_size", [2, 8, 8]))
    hp = info.hyperparameters
    assert list(hp["embed_dims"]) == ctor["embed_dims"]
    assert list(hp["inputconv_groups"]) == ctor.get("inputconv_groups", [1] * 6)
    assert list(hp["num_blocks"]) == ctor["num_blocks"] and list(hp["depths"]) == ctor["depths"]
    assert hp["deformable_groups"] == ctor["deformable_groups"] and hp["clip_size"] == ctor["clip_size"]
    assert set(model.state_dict()) == set(sd)


@pytest.mark.parametrize("path", MANIFESTS[:1], ids=[p.stem for p in MANIFESTS[:1]])
def test_broken_manifest_names_the_key(path: Path) -> None:
    from vsnystra.archs import rvrt

    sd, _ = _manifest(path)
    victim = "backbone.forward_2.main.5.1.linear.bias"
    del sd[victim]
    with pytest.raises(ValueError, match=r"linear\.bias"):
        rvrt.build(sd)
    sd2, _ = _manifest(path)
    key = "deform_align.forward_1.proj.1.weight"
    sd2[key] = torch.empty(7, 7, device="meta")
    with pytest.raises(ValueError, match=r"proj\.1\.weight"):
        rvrt.build(sd2)
