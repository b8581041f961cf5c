"""How the front ends (filters, command line) run PnP-Nystra, beyond the per-architecture defaults.

The front ends scale the pseudo-inverse start per window and head (the research code scales it by the whole batch):
each window's inverse then converges on its own, and a frame's output no longer depends on what else shares its
batch (tile size, frame size). It also converged much closer to exact attention on training crops (README, "Usage").
"""

from __future__ import annotations

from typing import Literal

FRONT_END_PINV_INIT: Literal["matrix"] = "matrix"
