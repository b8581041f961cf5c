"""A deterministic test picture as a VapourSynth clip in any format, shared by in-process tests and .vpy scripts
(which put this folder on sys.path), so both sides restore the same frames."""

from __future__ import annotations

import numpy as np
import vapoursynth as vs


def pattern(fmt: int, width: int, height: int, length: int = 2, *, matrix: str = "709", seed: int = 0) -> vs.VideoNode:
    """Colour gradients, edges and Gaussian noise (sigma 8/255), converted to ``fmt`` with ``matrix`` for YUV and
    grey; frames carry ``label``, ``_Primaries`` and ``_Transfer`` (BT.709) to check the property round trip."""
    core = vs.core
    blank = core.std.BlankClip(format=vs.RGBS, width=width, height=height, length=length, keep=True)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        rng = np.random.default_rng((seed, n))
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        for p in range(3):
            smooth = 0.5 + 0.3 * np.sin(xx / (6 + 2 * p) + yy / (9 + p) + n)
            edges = 0.15 * ((xx // 11 + yy // 7) % 2)
            plane = smooth + edges + 8 / 255 * rng.standard_normal((height, width))
            np.copyto(np.asarray(out[p]), np.clip(plane, 0, 1).astype(np.float32))
        out.props["label"] = "keep-me"
        return out

    rgb = core.std.ModifyFrame(blank, blank, fill)
    rgb_out = core.get_video_format(fmt).color_family == vs.RGB
    clip = core.resize.Bicubic(rgb, format=fmt, **({} if rgb_out else {"matrix_s": matrix}))
    return clip.std.SetFrameProps(_Primaries=1, _Transfer=1)
