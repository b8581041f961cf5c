"""patch_attention: swap every window attention of a model for another spec, in place, weights untouched."""

from __future__ import annotations

import dataclasses

from torch import nn

from vsnystra.archs.base import AttentionConfig, ConfigurableAttention, Keep
from vsnystra.attention.plan import LayerPlan
from vsnystra.attention.specs import AttentionSpec, Exact, Naive, PnPNystra


def _check_keep(name: str, value: str) -> Keep:
    if value not in ("keep", "drop"):
        raise ValueError(f"patch_attention: {name} must be 'keep' or 'drop', got {value!r}")
    return value  # type: ignore[return-value]


def patch_attention[M: nn.Module](
    model: M,
    spec: AttentionSpec | LayerPlan,
    *,
    window: int | tuple[int, ...] | list[int] | None = None,
    bias: str = "keep",
    mask: str = "keep",
    modulator: str = "keep",
) -> M:
    """Reconfigure every window-attention block of ``model`` and return it.

    ``patch_attention(model, Exact())`` restores the unpatched computation (the flip test).
    ``window`` enlarges the attention window as the paper does; ``bias``/``mask``/``modulator`` = "drop"
    reproduce the research code, which passes neither the relative-position bias nor the shift mask.
    A LayerPlan gives each attention layer its own spec, in the order of ``attention_layers(model)``.
    """
    if not isinstance(spec, (Exact, Naive, PnPNystra, LayerPlan)):
        raise TypeError(f"patch_attention: spec must be Exact(), Naive(), PnPNystra(...) or a LayerPlan, got {spec!r}")
    if isinstance(window, list):
        window = tuple(window)
    if window is not None:
        sizes = (window,) if isinstance(window, int) else window
        if not sizes or any(int(s) < 1 for s in sizes):
            raise ValueError(f"patch_attention: window must be positive, got {window!r}")
    cfg = AttentionConfig(
        window=window,
        bias=_check_keep("bias", bias),
        mask=_check_keep("mask", mask),
        modulator=_check_keep("modulator", modulator),
    )
    blocks = [m for m in model.modules() if isinstance(m, ConfigurableAttention)]
    if not blocks:
        raise TypeError(f"patch_attention: {type(model).__name__} has no window-attention block to patch")
    layers = attention_layers(model)
    specs = spec.specs if isinstance(spec, LayerPlan) else (spec,) * len(layers)
    if len(specs) != len(layers):
        raise ValueError(
            f"patch_attention: the plan has {len(specs)} layers but {type(model).__name__} has {len(layers)} "
            "window-attention blocks; build the plan for this model (one spec per attention_layers(model) entry)"
        )
    per_layer = {id(layer): s for layer, s in zip(layers, specs, strict=True)}
    for block in blocks:
        # containers (e.g. the model keeping its padding in step with the window) only read the window
        block.configure_attention(dataclasses.replace(cfg, spec=per_layer.get(id(block), specs[0])))
    return model


def attention_layers(model: nn.Module) -> list[ConfigurableAttention]:
    """The blocks that run window attention, in ``model.modules()`` order: what a LayerPlan's specs index.

    They are the configurable modules that hold no other configurable module (a model that configures its own
    padding for the window is a container, not a layer).
    """
    blocks = [m for m in model.modules() if isinstance(m, ConfigurableAttention)]
    return [
        b
        for b in blocks
        if isinstance(b, nn.Module)
        and not any(c is not b and isinstance(c, ConfigurableAttention) for c in b.modules())
    ]
