"""Per-layer attention plans: Exact where Nyström hurts, PnP-Nystra where it is harmless.

Why: on trained models the error PnP-Nystra introduces differs by orders of magnitude between layers (a few layers
carry most of the loss), so one spec for every layer either gives up the quality or the speed. A plan holds one
spec per window-attention layer in model order (the order ``patch_attention`` visits blocks); plan_under_budget
picks it from per-layer measurements on calibration images (never evaluation data).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vsnystra.attention.specs import AttentionSpec, Exact, Naive, PnPNystra

_KINDS: dict[str, type[Exact] | type[Naive] | type[PnPNystra]] = {
    "Exact": Exact,
    "Naive": Naive,
    "PnPNystra": PnPNystra,
}


@dataclass(frozen=True)
class LayerPlan:
    """One attention spec per window-attention layer, in model order."""

    specs: tuple[AttentionSpec, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.specs, tuple) or not self.specs:
            raise ValueError(f"LayerPlan: specs must be a non-empty tuple of specs, got {self.specs!r}")
        for i, spec in enumerate(self.specs):
            if not isinstance(spec, Exact | Naive | PnPNystra):
                raise TypeError(f"LayerPlan: layer {i} spec must be Exact(), Naive() or PnPNystra(...), got {spec!r}")

    def __len__(self) -> int:
        return len(self.specs)

    @property
    def nystrom_layers(self) -> tuple[int, ...]:
        """Indices of the layers that run PnP-Nystra."""
        return tuple(i for i, s in enumerate(self.specs) if isinstance(s, PnPNystra))

    def to_json(self) -> list[dict[str, Any]]:
        """JSON-ready list: {"kind": "Exact"} or {"kind": "PnPNystra", <its fields>} per layer."""
        return [{"kind": type(s).__name__, **dataclasses.asdict(s)} for s in self.specs]

    @classmethod
    def from_json(cls, data: Sequence[Mapping[str, Any]]) -> LayerPlan:
        """Inverse of to_json; unknown kinds or fields raise with the layer named."""
        specs: list[AttentionSpec] = []
        for i, item in enumerate(data):
            fields = dict(item)
            kind = _KINDS.get(str(fields.pop("kind", "")))
            if kind is None:
                raise ValueError(f"LayerPlan.from_json: layer {i} kind must be one of {sorted(_KINDS)}, got {item!r}")
            try:
                specs.append(kind(**fields))
            except (TypeError, ValueError) as e:
                raise ValueError(f"LayerPlan.from_json: layer {i}: {e}") from None
        return cls(tuple(specs))


def plan_under_budget(
    drops: Sequence[float],
    budget_db: float,
    nystrom: PnPNystra,
    joint: Callable[[LayerPlan], float] | None = None,
) -> LayerPlan:
    """The plan with the most Nyström layers whose loss stays within ``budget_db``.

    drops[i]: measured loss (dB) when only layer i runs ``nystrom``. Layers are taken in order of increasing loss
    while the summed losses fit the budget; ``joint(plan)``, when given, measures a plan's actual loss, and layers
    are then dropped from the end of that order until it fits (losses need not add up).
    """
    if budget_db < 0:
        raise ValueError(f"plan_under_budget: budget_db must be >= 0, got {budget_db}")
    order = sorted(range(len(drops)), key=lambda i: (drops[i], i))
    chosen: list[int] = []
    total = 0.0
    for i in order:
        if total + max(drops[i], 0.0) > budget_db:
            break
        total += max(drops[i], 0.0)
        chosen.append(i)

    def build(layers: Sequence[int]) -> LayerPlan:
        picked = set(layers)
        return LayerPlan(tuple(nystrom if i in picked else Exact() for i in range(len(drops))))

    if joint is not None:
        while chosen and joint(build(chosen)) > budget_db:
            chosen.pop()
    return build(chosen)
