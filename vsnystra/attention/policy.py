"""policy="auto": run Nyström only where it pays on the current device, from a cost model.

Per query row and head, exact attention costs about N·(d + d_v) multiply-adds plus a softmax over N logits, and
PnP-Nystra about m·(2d + m + 2(d_v + 1)) multiply-adds plus element-wise kernels over 2m entries and a fixed
per-call overhead (landmark pooling, pinv). Small windows are dominated by that overhead, so each device class has
a minimum token count and a minimum ratio of modelled costs. The CPU thresholds come from benchmarks/attention.py
(results in benchmarks/results/); the CUDA ones are a guess until a GPU measures them (kernels are launch-bound
below about a thousand tokens)."""

from __future__ import annotations

import torch

# device type -> (minimum tokens per window, minimum exact/Nyström cost ratio); measured, see benchmarks/results.
_THRESHOLDS: dict[str, tuple[int, float]] = {"cpu": (256, 4.0), "cuda": (1024, 4.0)}
_DEFAULT = (1024, 4.0)


def cost_ratio(n: int, m: int, d: int, dv: int | None = None) -> float:
    """Modelled cost of exact attention over PnP-Nystra for one window and head (> 1: Nyström is cheaper)."""
    dv = d if dv is None else dv
    exact = n * (d + dv) + 4 * n
    nystrom = m * (2 * d + m + 2 * (dv + 1)) + 8 * m
    return exact / nystrom


def nystrom_pays(n: int, m: int, d: int, device: torch.device) -> bool:
    """Whether PnP-Nystra with m landmarks is expected to beat exact attention at N tokens, head dim d."""
    min_tokens, min_ratio = _THRESHOLDS.get(device.type, _DEFAULT)
    return m < n and n >= min_tokens and cost_ratio(n, m, d) >= min_ratio
