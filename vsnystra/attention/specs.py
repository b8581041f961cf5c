"""Attention specs: frozen, hashable descriptions of which algorithm the seam runs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Exact:
    """Exact softmax attention through torch's scaled_dot_product_attention (bias and mask folded in)."""


@dataclass(frozen=True)
class Naive:
    """Upstream's formulation written out: softmax(q·kᵀ·scale + bias + mask)·v. The stock baseline."""


@dataclass(frozen=True)
class PnPNystra:
    """PnP-Nystra (Kidambi & Nair 2025): Nyström approximation of the unnormalised softmax kernel.

    landmarks: number of landmarks m (2-D segment means of q and k over the window grid).
    iters: iterations of the Razavi et al. pseudo-inverse.
    threshold: t of the kernel exp(min(x, t)) + relu(x - t); None means plain exp.
    pinv_init: "batch" scales Z0 over the whole call as the research code does; "matrix" per window and head.
    policy: "always" runs Nyström wherever landmarks < tokens; "auto" falls back to Exact where it does not pay
        on the current device (vsnystra.attention.policy).
    guard: recompute exactly the rows where the approximation broke down: denominator not positive, or an output
        entry larger than twice the window's largest |value| (exact attention never exceeds it).
        Other rows are untouched, so results match the research code wherever it is meaningful.
    max_error: when set, a sample of query rows (8 per window, at most 64 windows per call) is recomputed exactly
        and, if the result's relative error there (vsnystra.attention.check) exceeds max_error, the whole call runs
        exact attention instead and a warning says so: a cheap on-the-fly refusal for layers whose trained
        attention Nyström cannot represent (it then costs Nyström plus exact; a LayerPlan keeps such layers Exact).
    """

    landmarks: int = 16
    iters: int = 6
    threshold: float | None = None
    pinv_init: Literal["batch", "matrix"] = "batch"
    policy: Literal["always", "auto"] = "always"
    guard: bool = True
    max_error: float | None = None

    def __post_init__(self) -> None:
        for name in ("landmarks", "iters"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"PnPNystra: {name} must be an int, got {value!r}")
        if self.threshold is not None and (
            isinstance(self.threshold, bool)
            or not isinstance(self.threshold, int | float)
            or not math.isfinite(self.threshold)
        ):
            raise ValueError(f"PnPNystra: threshold must be a finite number or None, got {self.threshold!r}")
        if self.landmarks < 1:
            raise ValueError(f"PnPNystra: landmarks must be >= 1, got {self.landmarks}")
        if self.iters < 0:
            raise ValueError(f"PnPNystra: iters must be >= 0, got {self.iters}")
        if self.max_error is not None and (
            isinstance(self.max_error, bool)
            or not isinstance(self.max_error, int | float)
            or not (math.isfinite(self.max_error) and self.max_error > 0)
        ):
            raise ValueError(f"PnPNystra: max_error must be a positive number or None, got {self.max_error!r}")
        if self.pinv_init not in ("batch", "matrix"):
            raise ValueError(f"PnPNystra: pinv_init must be 'batch' or 'matrix', got {self.pinv_init!r}")
        if self.policy not in ("always", "auto"):
            raise ValueError(f"PnPNystra: policy must be 'always' or 'auto', got {self.policy!r}")


AttentionSpec = Exact | Naive | PnPNystra
