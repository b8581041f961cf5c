"""patch_attention: swap every window attention of a model for another spec, in place, weights untouched."""

from __future__ import annotations

from torch import nn

from vsnystra.archs.base import AttentionConfig, ConfigurableAttention, Keep
from vsnystra.attention.specs import AttentionSpec, Exact, Naive, PnPNystra


def _check_keep(name: str, value: str) -> Keep:
    if value not in ("keep", "drop"):
        raise ValueError(f"patch_attention: {name} must be 'keep' or 'drop', got {value!r}")
    return value  # type: ignore[return-value]


def patch_attention[M: nn.Module](
    model: M,
    spec: AttentionSpec,
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
    """
    if not isinstance(spec, (Exact, Naive, PnPNystra)):
        raise TypeError(f"patch_attention: spec must be Exact(), Naive() or PnPNystra(...), got {spec!r}")
    if isinstance(window, list):
        window = tuple(window)
    if window is not None:
        sizes = (window,) if isinstance(window, int) else window
        if not sizes or any(int(s) < 1 for s in sizes):
            raise ValueError(f"patch_attention: window must be positive, got {window!r}")
    cfg = AttentionConfig(
        spec=spec,
        window=window,
        bias=_check_keep("bias", bias),
        mask=_check_keep("mask", mask),
        modulator=_check_keep("modulator", modulator),
    )
    blocks = [m for m in model.modules() if isinstance(m, ConfigurableAttention)]
    if not blocks:
        raise TypeError(f"patch_attention: {type(model).__name__} has no window-attention block to patch")
    for block in blocks:
        block.configure_attention(cfg)
    return model
