"""Interlaced clips (_FieldBased 1 or 2): refused with a hint to deinterlace, unless ``progressive=1``; checked on
the first frame when the filter is created and on every frame it restores."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import vapoursynth as vs

from vsnystra.vs import build_shim
from vsnystra.vs.filters import RVRT, SwinIR, Uformer

core = vs.core
REPO_ROOT = Path(__file__).resolve().parents[1]
ALL = [SwinIR, Uformer, RVRT]


def clip(field_based: int | None, length: int = 3) -> vs.VideoNode:
    """A small YUV420P8 gradient (4:2:0 is where interlacing matters: chroma rows pair across fields)."""
    rgb = core.std.BlankClip(format=vs.RGBS, width=32, height=24, length=length, keep=True)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        yy, xx = np.mgrid[0:24, 0:32].astype(np.float32)
        for p in range(3):
            np.copyto(np.asarray(out[p]), (0.5 + 0.3 * np.sin(xx / (4 + p) + yy / 5 + n)).astype(np.float32))
        return out

    yuv = core.resize.Bicubic(core.std.ModifyFrame(rgb, rgb, fill), format=vs.YUV420P8, matrix_s="709")
    return yuv if field_based is None else yuv.std.SetFrameProps(_FieldBased=field_based)


def pixels(node: vs.VideoNode, n: int) -> list[np.ndarray]:
    f = node.get_frame(n)
    return [np.asarray(f[p]).copy() for p in range(f.format.num_planes)]


@pytest.mark.parametrize("func", ALL)
@pytest.mark.parametrize(("field_based", "order", "bwdif_field"), [(2, "top field first", 1), (1, "bottom", 0)])
def test_interlaced_clip_is_refused_with_a_one_line_hint(func, field_based: int, order: str, bwdif_field: int) -> None:
    name = func.__name__
    with pytest.raises(
        vs.Error, match=rf"^nystra\.{name}: frame 0 is interlaced \(_FieldBased={field_based}, "
    ) as info:
        func(clip(field_based), device="cpu")
    message = str(info.value)
    assert "\n" not in message and order in message
    assert f"core.bwdif.Bwdif(clip, field={bwdif_field})" in message and "QTGMC" in message
    assert "progressive=1" in message


@pytest.mark.parametrize("func", ALL)
def test_progressive_restores_interlaced_frames_as_they_are_and_keeps_the_field_order(func) -> None:
    tagged = func(clip(2, 2), device="cpu", attention="exact", progressive=1)
    plain = func(clip(None, 2), device="cpu", attention="exact")
    assert tagged.get_frame(1).props["_FieldBased"] == 2
    assert all(np.array_equal(a, b) for a, b in zip(pixels(tagged, 1), pixels(plain, 1), strict=True))


@pytest.mark.parametrize("func", ALL)
def test_a_later_interlaced_frame_fails_that_frame(func) -> None:
    mixed = core.std.Splice([clip(0, 3), clip(1, 1)])  # frame 3 is tagged bottom field first
    # RVRT: two-frame chunks and a given sigma, so frame 0 reads frames 0 and 1 only (no scene estimate over 8)
    kw = {"chunk": 2, "chunk_overlap": 0, "sigma": 15.0} if func is RVRT else {}
    out = func(mixed, device="cpu", attention="exact", **kw)
    assert out.get_frame(0).props["_FieldBased"] == 0
    with pytest.raises(vs.Error, match=rf"nystra\.{func.__name__}: frame 3 is interlaced \(_FieldBased=1, bottom"):
        out.get_frame(3)


@pytest.mark.parametrize("value", [2, -1, "yes", 0.5])
def test_progressive_must_be_a_flag(value: object) -> None:
    with pytest.raises(vs.Error, match=r"^nystra\.Uformer: progressive must be 1 or 0 \(True or False\), got "):
        Uformer(clip(None), device="cpu", progressive=value)  # type: ignore[arg-type]


def test_plugin_keyword_through_a_shim_built_from_the_manifest(tmp_path: Path) -> None:
    """``core.nystra.X(..., progressive=1)``: the keyword is in plugin_manifest/nystra.json; a shim built from it (not
    the installed one, which may predate it) is loaded into a core that autoloads nothing."""
    plugin = build_shim.build_plugin(tmp_path / "nystra") / "libnystra.so"
    code = textwrap.dedent(
        f"""
        import vapoursynth as vs

        class Policy(vs.EnvironmentPolicy):
            current = None
            def on_policy_registered(self, api):
                self.api = api
            def get_current_environment(self):
                return self.current
            def set_environment(self, env):
                old, self.current = self.current, env
                return old
            def is_alive(self, env):
                return True

        policy = Policy()
        vs.register_policy(policy)
        env = policy.api.create_environment(vs.CoreCreationFlags.DISABLE_AUTO_LOADING)
        with policy.api.wrap_environment(env).use():
            core = vs.core
            core.std.LoadPlugin({str(plugin)!r})
            clip = core.std.BlankClip(format=vs.YUV420P8, width=32, height=24, length=2)
            clip = clip.std.SetFrameProps(_FieldBased=2)
            try:
                core.nystra.Uformer(clip, device="cpu")
            except vs.Error as exc:
                print("refused:", exc)
            out = core.nystra.Uformer(clip, device="cpu", progressive=1)
            print("progressive:", out.format.name, out.get_frame(1).props["_FieldBased"])
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    refused = proc.stdout.split("progressive:")[0]
    assert refused.startswith("refused:") and "nystra.Uformer: frame 0 is interlaced (_FieldBased=2, top" in refused
    assert "progressive: YUV420P8 2" in proc.stdout
