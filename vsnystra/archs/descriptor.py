"""The typed description of one architecture: everything the rest of vsnystra may know about it.

Each architecture module (``archs/swinir.py``, ``archs/uformer.py``, ``archs/rvrt.py``) ends with one
``ARCHITECTURE = Architecture(...)``; ``archs/registry.py`` lists them in detection order. Front ends, runtimes, the
zoo and the training tools ask the descriptor instead of comparing architecture names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from vsnystra.archs.base import Kind, RestorationModel, StateDict, Window
from vsnystra.attention.specs import PnPNystra


class Builder(Protocol):
    """Build the model from a canonical state dict (hyper-parameters read from shapes) and load it strictly."""

    def __call__(self, sd: StateDict, /, **overrides: object) -> RestorationModel: ...


@dataclass(frozen=True)
class NystraDefaults:
    """PnP-Nystra's landmarks, pseudo-inverse iterations and kernel threshold (None: plain exp)."""

    landmarks: int
    iters: int
    threshold: float | None


# For checkpoints no descriptor recognises (their load fails with its own message; this only keeps specs defined).
GENERIC_NYSTRA = NystraDefaults(landmarks=16, iters=6, threshold=None)


@dataclass(frozen=True, eq=False)
class Architecture:
    """One architecture: detection, building, and the defaults and rules the front ends apply to it.

    nystra_trained / nystra_paper: PnP-Nystra settings at the trained window (relative-position bias and shift mask
    kept) and at an enlarged window (the paper's setting, for bias-free windows). They differ because the paper's
    few iterations and thresholded kernel were tuned for enlarged windows without bias; at the small trained
    windows they cost far more accuracy than the plain exp kernel with more iterations (README, "Usage").
    cpu_bf16: whether half-precision input may run in bf16 on CPUs with native bf16 (False where the model lost
    visible quality in bf16). default_sigma: the noise level its non-blind denoisers run with when neither the user
    nor the bundled model's zoo entry gives one.
    """

    name: str  # ModelInfo.arch and models/zoo.json's "arch"
    filter_name: str  # core.nystra.<filter_name> serves it
    kind: Kind
    default_model: str  # the bundled model the filter uses when none is given
    detect: Callable[[StateDict], bool]  # key names only, cheap
    build: Builder
    key_hint: str  # the key families that identify its checkpoints, named when nothing is detected
    nystra_trained: NystraDefaults
    nystra_paper: NystraDefaults
    paper_window: Window  # the research code's enlarged window
    window_lengths: tuple[int, ...] = (1,)  # values the window option takes; (1,): one int (a square window)
    window_hint: str = ""  # appended to window errors, e.g. " ([h, w] or [t, h, w], e.g. [64, 64])"
    gray: bool = False  # one-channel checkpoints exist (the filter accepts GRAYS/GRAYH clips)
    tile_multiple: int = 1  # tiles must be multiples of this (input pixels)
    cpu_bf16: bool = True
    default_sigma: float | None = None

    def nystra_defaults(self, *, enlarged_window: bool) -> NystraDefaults:
        return self.nystra_paper if enlarged_window else self.nystra_trained

    def paper_setting(self) -> tuple[Window, PnPNystra]:
        """The research code's setting: its enlarged window and PnP-Nystra with batch-global pinv scaling."""
        d = self.nystra_paper
        return self.paper_window, PnPNystra(landmarks=d.landmarks, iters=d.iters, threshold=d.threshold)
