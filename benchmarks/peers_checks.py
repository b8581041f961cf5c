"""The RVRT behaviour checks of issue 17 for benchmarks/peers.py --only checks, each measured against its target.

``restore(frames, sigma)`` is the RVRT under test at its default settings: (T, 3, H, W) floats -> the same.
(a) uses time: a static clip (one Vid4 frame repeated) with fresh noise in every frame vs one draw repeated;
(b) keeps detail: sigma=0 on the clean clip, and sigma 10 output vs its input;
(c) sigma calibration: the true sigma vs true-10 .. true+10 passed;
(d) grid: the 4x4 phase spread and the 1/4-cycle FFT peak of the error on a flat noisy grey clip.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import peers_lib as L

log = logging.getLogger("peers")

Restore = Callable[[np.ndarray, float], np.ndarray]


@dataclass
class Check:
    name: str
    measured: str
    value: str
    target: str
    met: bool | None  # None: a reference figure, no target


@dataclass
class Clip:
    """One evaluation clip: its name, the clean frames and the noisy inputs of the video table per sigma."""

    seq: str
    clean: np.ndarray
    noisy: dict[float, np.ndarray]


PsnrAt = Callable[[float, float], list[float]]  # (true sigma, sigma passed) -> per-frame PSNR of the video input


def frame_psnrs(out: np.ndarray, clean: np.ndarray) -> list[float]:
    return [L.psnr_rgb(o, c) for o, c in zip(out, clean, strict=True)]


def frame_psnr(out: np.ndarray, clean: np.ndarray) -> float:
    return float(np.mean(frame_psnrs(out, clean)))


def uses_time(restore: Restore, clip: Clip, sigma: float = 20.0) -> list[Check]:
    """(a) Fresh noise per frame of a static clip must restore >= 3 dB better than one draw repeated."""
    frame = clip.clean[0]
    t = len(clip.clean)
    static = np.stack([frame] * t)
    fresh = np.stack(L.add_noise([frame] * t, sigma, L.noise_seed("static", clip.seq, sigma)))
    repeated = np.stack([fresh[0]] * t)
    p_fresh = frame_psnr(restore(fresh, sigma), static)
    p_rep = frame_psnr(restore(repeated, sigma), static)
    mean = L.psnr_rgb(fresh.mean(axis=0), frame)
    where = f"{clip.seq} frame 0 x{t}, sigma {sigma:g}"
    return [
        Check("(a) uses time", f"{where}: fresh noise per frame", f"{p_fresh:.2f} dB", "", None),
        Check("(a) uses time", f"{where}: one noise draw repeated", f"{p_rep:.2f} dB", "", None),
        Check(
            "(a) uses time",
            f"{where}: fresh minus repeated",
            f"{p_fresh - p_rep:+.2f} dB",
            ">= +3 dB",
            p_fresh - p_rep >= 3.0,
        ),
        Check(
            "(a) uses time", f"{where}: plain temporal mean of the fresh frames", f"{mean:.2f} dB", "reference", None
        ),
        Check("(a) uses time", f"{where}: noisy input", f"{frame_psnr(fresh, static):.2f} dB", "reference", None),
    ]


def keeps_detail(restore: Restore, clip: Clip, psnr_at: PsnrAt) -> list[Check]:
    """(b) sigma=0 on clean frames >= 38 dB; at sigma 10 no output frame is worse than its input frame."""
    p0 = frame_psnr(restore(clip.clean, 0.0), clip.clean)
    where = f"{clip.seq}, {len(clip.clean)} frames"
    rows = [Check("(b) keeps detail", f"{where}: clean input, sigma=0", f"{p0:.2f} dB", ">= 38 dB", p0 >= 38.0)]
    if 10.0 in clip.noisy:
        p_in = frame_psnrs(clip.noisy[10.0], clip.clean)
        p_out = psnr_at(10.0, 10.0)
        gains = [o - i for o, i in zip(p_out, p_in, strict=True)]
        what = f"{where}: sigma 10 output minus input, mean ({np.mean(p_out):.2f} - {np.mean(p_in):.2f}) / worst frame"
        value = f"{np.mean(gains):+.2f} / {min(gains):+.2f} dB"
        rows.append(Check("(b) keeps detail", what, value, "worst frame >= 0 dB", min(gains) >= 0.0))
    return rows


def calibration(clip: Clip, psnr_at: PsnrAt) -> list[Check]:
    """(c) For each true sigma, passing it must be within 0.2 dB of the best of true-10, -5, 0, +5, +10."""
    rows = []
    for true in sorted(clip.noisy):
        passed = [s for s in (true - 10, true - 5, true, true + 5, true + 10) if s >= 0]
        got = {s: float(np.mean(psnr_at(true, s))) for s in passed}
        best = max(got, key=lambda s: got[s])
        detail = ", ".join(f"{s:g}: {p:.2f}" for s, p in got.items())
        gap = got[true] - got[best]
        rows.append(
            Check(
                "(c) sigma calibrated",
                f"{clip.seq} true sigma {true:g}, PSNR by sigma passed ({detail}); best {best:g}",
                f"{gap:+.2f} dB",
                ">= -0.2 dB",
                gap >= -0.2,
            )
        )
    return rows


def no_grid(restore: Restore, size: int, frames: int, sigma: float = 20.0) -> list[Check]:
    """(d) Flat mid-grey clip with noise: the error's 4x4 phase spread <= 0.6 levels, and its 1/4-cycle FFT peak."""
    grey = np.full((3, size, size), 0.5, dtype=np.float32)
    noisy = np.stack(L.add_noise([grey] * frames, sigma, L.noise_seed("flat", "grey", sigma)))
    err = restore(noisy, sigma) - 0.5
    noise = noisy - 0.5
    spread, ratio = L.phase_spread(err), L.quarter_frequency_ratio(err)
    where = f"grey {size}x{size} x{frames}, sigma {sigma:g}"
    return [
        Check(
            "(d) no grid", f"{where}: 4x4 phase spread of the error", f"{spread:.3f} levels", "<= 0.6", spread <= 0.6
        ),
        Check(
            "(d) no grid",
            f"{where}: same statistic on the noise alone",
            f"{L.phase_spread(noise):.3f} levels",
            "reference",
            None,
        ),
        Check(
            "(d) no grid", f"{where}: error FFT power at 1/4 cycle/px over the median", f"{ratio:.1f}x", "report", None
        ),
        Check(
            "(d) no grid",
            f"{where}: same ratio on the noise alone",
            f"{L.quarter_frequency_ratio(noise):.1f}x",
            "reference",
            None,
        ),
        Check(
            "(d) no grid",
            f"{where}: error RMS (levels)",
            f"{float(np.sqrt(np.mean(err**2))) * 255:.2f}",
            "reference",
            None,
        ),
    ]


def run_checks(
    restore: Restore,
    clips: list[Clip],
    psnr_at: Callable[[str, float, float], list[float]],
    size: int,
    frames: int,
) -> list[Check]:
    """All four checks; ``psnr_at(seq, true sigma, sigma passed)``: memoised per-frame PSNR on the video inputs."""
    rows: list[Check] = []
    for clip in clips:
        log.info("checks: (a) uses time on %s", clip.seq)
        rows += uses_time(restore, clip)
    for clip in clips:
        log.info("checks: (b) keeps detail on %s", clip.seq)
        rows += keeps_detail(restore, clip, lambda t, s, seq=clip.seq: psnr_at(seq, t, s))
    for clip in clips:
        log.info("checks: (c) sigma calibration on %s", clip.seq)
        rows += calibration(clip, lambda t, s, seq=clip.seq: psnr_at(seq, t, s))
    log.info("checks: (d) grid on a flat clip")
    rows += no_grid(restore, size, frames)
    return rows


def checks_table(rows: list[Check]) -> list[str]:
    lines = ["| check | measured | value | target | met |", "|---|---|---|---|---|"]
    for r in rows:
        met = "" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(f"| {r.name} | {r.measured} | {r.value} | {r.target} | {met} |")
    return lines
