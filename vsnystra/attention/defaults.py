"""PnP-Nystra defaults per architecture, shared by the filters and the command line.

At an enlarged window (the user gave ``window``) the paper's settings (notes/method.md §3). At the trained window, with
the relative-position bias and shift mask kept, the paper's landmark count with the plain exp kernel and 6 iterations
(Uformer 8): the paper chose 2 iterations and the thresholded kernel for bias-free enlarged windows, and they cost
more here. Measured on training crops (Urban100 from shared/data/train), never on evaluation data: SwinIR x2 m 16:
0.05 dB with 6 iterations, 0.28 dB with 2 and t 5. Uformer (bundled default) sigma 15/25/50, m 32, two sets of 8
crops: 6 iterations 0.12/0.12/0.07 and 0.06/0.08/0.07 dB, 8 iterations 0.05/0.03/0.02 and 0.03/0.03/0.02, 10-12
about the same, 16 worse (0.21/0.14), 20-40 far worse (1-4.5 dB): the truncated iteration leaves the landmark
kernel's smallest singular values uninverted, which regularises the nearly singular G_A of 8x8 windows; m 16:
0.30/0.30/0.20; m 48 needs 12 iterations for 0.01 dB and costs 1.6x the time of m 32.
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
    "uformer": (32, 8, None),
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
