"""PnPNystra.max_error: refuse a Nyström result that a sample of exactly computed rows shows to be wrong.

Why: on some trained models (ESWT's unscaled q = k attention, logits up to ~50) the attention of a window is sharp
and close to the identity, a kernel no m-landmark Nyström approximation represents, and the output is wrong without
tripping the guard (rows stay finite and within the values' range). A handful of exact rows detects it: their
relative error, with the values' per-window mean removed (the part any normalised approximation gets right), is the
error measure. It costs ~8 rows of exact attention per checked window and head, on at most 64 windows per call.
"""

from __future__ import annotations

import logging
import threading

import torch

from vsnystra.attention.exact import exact_attention
from vsnystra.attention.specs import PnPNystra

_log = logging.getLogger(__name__)
_warned = threading.Event()  # one warning per process, then debug level
ROWS_PER_WINDOW = 8
MAX_WINDOWS = 64


def sampled_error(
    out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None,
) -> float:
    """‖out − exact‖ / ‖exact − mean(v)‖ over evenly spread query rows of evenly spread windows (fp32)."""
    bn, _, n, _ = q.shape
    wins = torch.arange(0, bn, max(1, bn // MAX_WINDOWS), device=q.device)
    rows = torch.linspace(0, n - 1, min(ROWS_PER_WINDOW, n), device=q.device).round().long()
    qs = q[wins][:, :, rows].float()
    vw = v[wins].float()
    logits = (qs * scale) @ k[wins].float().transpose(-2, -1)  # (w, nH, r, N)
    if bias is not None:
        logits = logits + bias[:, rows].float().unsqueeze(0)
    if mask is not None:
        logits = logits + mask[wins % mask.shape[0]][:, rows].float().unsqueeze(1)
    exact = logits.softmax(-1) @ vw
    spread = (exact - vw.mean(dim=2, keepdim=True)).norm()
    err = (out[wins][:, :, rows].float() - exact).norm()
    return float(err / spread.clamp_min(torch.finfo(torch.float32).tiny))


def checked(
    out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    bias: torch.Tensor | None,
    mask: torch.Tensor | None,
    spec: PnPNystra,
    window: tuple[int, ...] | None,
) -> torch.Tensor:
    """``out`` when spec.max_error is None or the sampled error is within it, else exact attention (warning once)."""
    if spec.max_error is None:
        return out
    err = sampled_error(out, q, k, v, scale=scale, bias=bias, mask=mask)
    if err <= spec.max_error:  # NaN fails
        return out
    grid = "x".join(str(s) for s in window) if window else f"{q.shape[2]}-token"
    _log.log(
        logging.DEBUG if _warned.is_set() else logging.WARNING,
        "attention: PnP-Nystra's error on exactly recomputed sample rows is %.3g (max_error %.3g) on a %s window "
        "with %d landmarks, so exact attention ran instead; Nyström does not fit this layer's attention: keep it "
        "Exact (vsnystra.attention.plan.LayerPlan) or raise max_error",
        err,
        spec.max_error,
        grid,
        spec.landmarks,
    )
    _warned.set()
    return exact_attention(q, k, v, scale=scale, bias=bias, mask=mask)
