"""PnP-Nystra defaults per architecture, shared by the filters and the command line.

At an enlarged window (the user gave ``window``) the paper's settings (notes/method.md §3). At the trained window, with
the relative-position bias and shift mask kept, the paper's landmark count with 6 iterations and the plain exp kernel:
the paper chose 2 iterations and the thresholded kernel for bias-free enlarged windows, and they cost more here
(training crops, Urban100 from shared/data/train, not evaluation data: SwinIR x2 m 16: 0.05 dB with 6 iterations,
0.28 dB with 2 and t 5; Uformer sigma 15/25/50 m 32: 0.10/0.11/0.07 dB with plain exp, m 16: 0.30/0.30/0.20).
"""

from __future__ import annotations

from typing import Literal

from vsnystra.attention.specs import PnPNystra

# Per-window-and-head scaling of the pseudo-inverse start (the research code scales by the whole batch): each
# window's inverse converges on its own, and a frame's output no longer depends on what else is in the batch
# (tile size, frame size). Measured on training crops (not evaluation data): SwinIR x2 default at its trained window,
# m 16, 6 iterations, 0.58 -> 0.06 dB drop; at window 32 (paper settings) 0.38 -> 0.28 dB.
FRONT_END_PINV_INIT: Literal["matrix"] = "matrix"

# arch -> (landmarks, iterations, kernel threshold)
PAPER_WINDOW: dict[str, tuple[int, int, float | None]] = {
    "swinir": (16, 2, 5.0),
    "uformer": (32, 6, 0.0),
    "rvrt": (32, 6, 0.0),
}
TRAINED_WINDOW: dict[str, tuple[int, int, float | None]] = {
    "swinir": (16, 6, None),
    "uformer": (32, 6, None),
    "rvrt": (32, 6, None),
}
OTHER = (16, 6, None)


def nystra_defaults(arch: str | None, *, enlarged_window: bool) -> tuple[int, int, float | None]:
    """(landmarks, iterations, threshold) for ``arch`` ("swinir", "uformer", "rvrt"; case-insensitive)."""
    table = PAPER_WINDOW if enlarged_window else TRAINED_WINDOW
    return table.get((arch or "").lower(), OTHER)


# The paper's enlarged windows per architecture (notes/method.md §3).
PAPER_WINDOW_SIZE: dict[str, int | tuple[int, int, int]] = {"swinir": 32, "uformer": 64, "rvrt": (2, 64, 64)}


def paper_setting(arch: str) -> tuple[int | tuple[int, int, int], PnPNystra]:
    """The research code's setting for ``arch``: its enlarged window and PnP-Nystra (batch-global pinv scaling)."""
    m, k, t = PAPER_WINDOW[arch]
    return PAPER_WINDOW_SIZE[arch], PnPNystra(landmarks=m, iters=k, threshold=t)
