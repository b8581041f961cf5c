"""`vsnystra restore` / `vsnystra weights`: short clips made here with PyAV, fixture checkpoints as models."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from vsnystra.cli import main as cli_main
from vsnystra.cli import model as cli_model
from vsnystra.cli.media import Colour, FrameConverter

REPO = Path(__file__).resolve().parents[1]
PARITY = REPO.parent / "shared" / "fixtures" / "parity"
RVRT_DN = PARITY / "rvrt_denoise_small.pth"
SWINIR_X2 = PARITY / "swinir_classical_x2.pth"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


SRT = "1\n00:00:00,000 --> 00:00:00,150\nhello\n\n2\n00:00:00,150 --> 00:00:00,300\nworld\n"


def make_clip(
    path: Path,
    n: int = 8,
    w: int = 136,
    h: int = 136,
    *,
    audio: bool = True,
    subs: bool = False,
    tags: tuple[int, int, int, int] = (1, 1, 1, 1),  # colorspace, range, primaries, trc
) -> Path:
    """n frames of smooth noise (H.264, BT.709 limited range tags) plus a PCM stereo track (and subtitles), 24 fps."""
    rng = np.random.default_rng(1)
    srt = path.with_suffix(".srt")
    srt.write_text(SRT)
    with av.open(str(path), "w") as out, av.open(str(srt)) as sub_in:
        out.metadata["title"] = "test archive"
        v = out.add_stream("libx264", rate=24, options={"preset": "ultrafast", "crf": "10"})
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        ctx = v.codec_context
        ctx.colorspace, ctx.color_range, ctx.color_primaries, ctx.color_trc = tags
        a = out.add_stream("pcm_s16le", rate=48000) if audio else None
        if a is not None:
            a.layout = "stereo"
            a.metadata["language"] = "eng"
        sub = out.add_stream_from_template(sub_in.streams[0]) if subs else None
        if sub is not None:
            sub.metadata["language"] = "fra"
        for i in range(n):
            base = rng.random((h // 8, w // 8, 3))
            img = np.kron(base, np.ones((8, 8, 1)))[:h, :w] * 255
            f = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24").reformat(
                format="yuv420p", dst_colorspace=Colour(*tags).matrix(w, h), dst_color_range=Colour(*tags).range_enum()
            )
            f.pts = i
            for p in v.encode(f):
                out.mux(p)
        for p in v.encode(None):
            out.mux(p)
        if a is not None:
            total = 48000 * n // 24
            s = (np.sin(np.arange(total) / 9.0) * 9000).astype(np.int16)
            for k in range(0, total, 1024):
                c = s[k : k + 1024]
                af = av.AudioFrame.from_ndarray(np.stack([c, c]).T.reshape(1, -1).copy(), format="s16", layout="stereo")
                af.sample_rate, af.pts = 48000, k
                for p in a.encode(af):
                    out.mux(p)
            for p in a.encode(None):
                out.mux(p)
        if sub is not None:
            for p in sub_in.demux(sub_in.streams[0]):
                if p.size:
                    p.stream = sub
                    out.mux(p)
    return path


def probe(path: Path) -> dict[str, object]:
    """Frame count, size, rate, colour tags of the video, and the audio packets (bytes, pts) of a file."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = list(c.decode(v))
        info: dict[str, object] = {
            "frames": len(frames),
            "size": (frames[0].width, frames[0].height),
            "rate": Fraction(v.average_rate) if v.average_rate else None,
            "colour": Colour.of(v.codec_context),
            "pix_fmt": v.codec_context.pix_fmt,
            "times": [float(f.time) for f in frames],
            "first": frames[0].to_ndarray(format="rgb24"),
        }
    for kind in ("audio", "subtitle"):
        with av.open(str(path)) as c:
            st = [s for s in c.streams if s.type == kind]
            info[kind] = [(bytes(p), p.pts) for p in c.demux(st[0]) if p.size] if st else None
            info[kind + "_tags"] = {k: v for k, v in st[0].metadata.items() if k == "language"} if st else None
            info["title"] = c.metadata.get("title")
    return info


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("in") / "clip.mkv", subs=True)


def _no_partials(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".partial-" in p.name]


# ---------------------------------------------------------------- real models (fixture checkpoints)


@pytest.mark.skipif(not RVRT_DN.is_file(), reason="shared fixtures missing")
def test_rvrt_denoise_end_to_end(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["restore", str(clip), "-o", str(out), "--model", str(RVRT_DN), "--sigma", "25", "--device", "cpu"]
    rc = cli_main.main([*argv, "--codec", "x265", "--preset", "ultrafast", "--chunk", "4"])
    assert rc == 0, capsys.readouterr().err
    dst = out / "clip.mkv"
    src_i, dst_i = probe(clip), probe(dst)
    assert dst_i["frames"] == 8
    assert dst_i["size"] == (136, 136)
    assert dst_i["rate"] == 24
    assert dst_i["pix_fmt"] == "yuv420p10le"
    assert dst_i["times"] == pytest.approx(src_i["times"], abs=1e-3)
    c = dst_i["colour"]
    assert isinstance(c, Colour) and (c.colorspace, c.color_range, c.color_primaries, c.color_trc) == (1, 1, 1, 1)
    assert src_i["audio"] and dst_i["audio"] == src_i["audio"]  # packets copied byte for byte, same pts
    assert src_i["subtitle"] and dst_i["subtitle"] == src_i["subtitle"]
    assert (dst_i["audio_tags"], dst_i["subtitle_tags"], dst_i["title"]) == (
        {"language": "eng"},
        {"language": "fra"},
        "test archive",
    )
    diff = np.abs(dst_i["first"].astype(int) - src_i["first"].astype(int)).mean()  # type: ignore[union-attr]
    assert diff > 1.0  # the model ran (random fixture weights change the picture)
    assert _no_partials(out)
    err = capsys.readouterr().err
    assert "1 done, 0 skipped, 0 failed" in err and "fps" in err


@pytest.mark.skipif(not SWINIR_X2.is_file(), reason="shared fixtures missing")
def test_swinir_x2_frame_by_frame(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "small.mkv", n=3, w=48, h=40, audio=False)
    rc = cli_main.main(["restore", str(src), "--model", str(SWINIR_X2), "--device", "cpu", "--codec", "ffv1"])
    assert rc == 0
    dst = tmp_path / "small.restored.mkv"  # no -o: next to the input, tagged
    info = probe(dst)
    assert (info["frames"], info["size"], info["pix_fmt"]) == (3, (96, 80), "yuv444p16le")


@pytest.mark.skipif(not SWINIR_X2.is_file(), reason="shared fixtures missing")
def test_sigma_for_a_non_denoiser_is_a_usage_error(
    clip: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    argv = ["restore", str(clip), "-o", str(tmp_path), "--model", str(SWINIR_X2), "--device", "cpu", "--sigma", "5"]
    assert cli_main.main(argv) == 2
    assert "drop --sigma" in caplog.text
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- batch behaviour (stand-in model)


class FakeModel:
    """Identity restorer that counts frames and can fail after a number of frames."""

    def __init__(self, fail_after: int | None = None, exc: type[BaseException] = KeyboardInterrupt) -> None:
        self.fail_after, self.exc, self.calls = fail_after, exc, 0

    def __call__(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        self.calls += 1
        for i, f in enumerate(frames):
            if self.fail_after is not None and i >= self.fail_after:
                raise self.exc()
            yield f


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeModel:
    m = FakeModel()

    def load(settings: cli_model.Options) -> cli_model.LoadedModel:
        return cli_model.LoadedModel(torch.nn.Identity(), "fake", 1, torch.device("cpu"), torch.float32, m)

    monkeypatch.setattr(cli_model, "load", load)
    return m


def test_interrupt_leaves_no_final_file(
    clip: Path, tmp_path: Path, fake: FakeModel, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.fail_after = 3
    other = tmp_path / "other.mkv"
    other.write_bytes(clip.read_bytes())
    rc = cli_main.main(["restore", str(clip), str(other), "-o", str(tmp_path / "o"), "--codec", "ffv1"])
    assert rc == 130
    assert not (tmp_path / "o" / "clip.mkv").exists()
    assert _no_partials(tmp_path / "o")
    assert fake.calls == 1  # the batch stopped: the second file was not started
    assert "(interrupted)" in capsys.readouterr().err


def test_rerun_skips_finished_outputs(
    clip: Path, tmp_path: Path, fake: FakeModel, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main.main(["restore", str(clip), "-o", str(tmp_path), "--codec", "ffv1"]) == 0
    dst = tmp_path / "clip.mkv"
    stamp = dst.stat().st_mtime_ns
    assert probe(dst)["frames"] == 8 and fake.calls == 1
    assert cli_main.main(["restore", str(clip), "-o", str(tmp_path), "--codec", "ffv1"]) == 0
    assert fake.calls == 1 and dst.stat().st_mtime_ns == stamp
    assert "0 done, 1 skipped, 0 failed" in capsys.readouterr().err
    assert cli_main.main(["restore", str(clip), "-o", str(tmp_path), "--codec", "ffv1", "--overwrite"]) == 0
    assert fake.calls == 2


def test_bad_input_reported_batch_continues(
    clip: Path, tmp_path: Path, fake: FakeModel, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "broken.mkv"
    bad.write_bytes(b"\x1a\x45\xdf\xa3 this is not a video" * 50)
    odd = tmp_path / "odd.mkv"  # 33 px wide: fine as 4:4:4 input, impossible as 4:2:0 output
    with av.open(str(odd), "w") as o:
        st = o.add_stream("ffv1", rate=24)
        st.width, st.height, st.pix_fmt = 33, 20, "yuv444p"
        for i in range(2):
            fr = av.VideoFrame.from_ndarray(np.full((20, 33, 3), 90, np.uint8), format="rgb24").reformat(
                format="yuv444p"
            )
            fr.pts = i
            for pk in st.encode(fr):
                o.mux(pk)
        for pk in st.encode(None):
            o.mux(pk)
    truncated = tmp_path / "cut.mkv"
    truncated.write_bytes(clip.read_bytes()[:300])
    out = tmp_path / "out"
    inputs = [str(bad), str(truncated), str(clip), str(tmp_path / "absent.mp4"), str(odd)]
    rc = cli_main.main(["restore", *inputs, "-o", str(out)])
    assert rc == 1
    assert (out / "clip.mkv").is_file() and probe(out / "clip.mkv")["frames"] == 8
    assert not (out / "broken.mkv").exists() and not (out / "cut.mkv").exists()
    err = capsys.readouterr().err
    assert "1 done, 0 skipped, 4 failed" in err
    assert f"FAILED {bad}" in err and f"FAILED {truncated}" in err
    assert "--pix-fmt yuv444p10le" in err  # the odd-sized one says how to fix it
    assert _no_partials(out)


def test_frame_converter_matrix_and_roundtrip() -> None:
    g = np.linspace(0, 1, 64, dtype=np.float32)
    t = np.stack([np.broadcast_to(g, (64, 64)), np.broadcast_to(g[:, None], (64, 64)), 0.5 * (g + g[:, None])])
    bt709 = FrameConverter(Colour(colorspace=1, color_range=1))
    frame = bt709.to_frame(t, "yuv444p16le", src_size=(64, 64))
    assert (frame.format.name, frame.colorspace, frame.color_range) == ("yuv444p16le", 1, 1)
    assert np.abs(bt709.to_array(frame) - t).max() < 2e-3
    bt601 = FrameConverter(Colour(colorspace=6, color_range=1))
    assert np.abs(bt601.to_array(frame) - t).max() < 2e-3  # the frame's own tag wins over the stream's
    frame.colorspace = 2  # untagged frame: the stream's matrix decides
    assert np.abs(bt601.to_array(frame) - t).max() > 0.05
    assert np.abs(bt709.to_array(frame) - t).max() < 2e-3
    untagged_sd = Colour().matrix(720, 576)
    assert untagged_sd != Colour().matrix(1920, 1080)


# ---------------------------------------------------------------- .vpy input and a real kill


VPY = """
import os
import vapoursynth as vs
core = vs.core
n = int(globals().get("frames", os.environ.get("VSN_TEST_FRAMES", "8")))
clip = core.std.BlankClip(width=64, height=48, format=vs.YUV420P8, length=n, fpsnum=25, fpsden=1, color=[120, 90, 160])
clip = core.std.SetFrameProps(clip, _Matrix=1, _Range=0, _Primaries=1, _Transfer=1)
clip.set_output()
"""


def test_vpy_input(tmp_path: Path) -> None:
    script = tmp_path / "s.vpy"
    script.write_text(VPY)
    argv = ["restore", str(script), "-o", str(tmp_path / "o"), "--codec", "x264", "--preset", "ultrafast"]
    assert cli_main.main([*argv, "-a", "frames=6"]) == 0
    info = probe(tmp_path / "o" / "s.mkv")
    assert (info["frames"], info["size"], info["rate"]) == (6, (64, 48), 25)
    assert info["colour"] == Colour(colorspace=1, color_range=1, color_primaries=1, color_trc=1)
    y = info["first"]
    assert isinstance(y, np.ndarray)
    assert y.reshape(-1, 3).std(0).max() < 2.0  # a flat BlankClip stays flat (dither only)
    import vapoursynth as vs

    ref = vs.core.std.BlankClip(width=8, height=8, format=vs.YUV444P8, length=1, color=[120, 90, 160])
    ref = ref.resize.Point(format=vs.RGB24, matrix_in_s="709", range_in_s="limited").get_frame(0)
    expected = np.array([int(np.asarray(ref[p])[0, 0]) for p in range(3)])
    assert np.abs(y.reshape(-1, 3).mean(0) - expected).max() < 2.5  # BT.709 limited range, as tagged


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallow is the point
def test_a_signal_swallowed_inside_del_still_stops_the_frame_loop() -> None:
    from vsnystra.cli import interrupt

    class SignalsWhileCollected:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler's KeyboardInterrupt is "ignored" inside __del__

    with cli_main._sigterm_as_interrupt():
        try:
            obj = SignalsWhileCollected()
            del obj
            for _ in range(1000):  # let a pending handler run
                pass
        except KeyboardInterrupt:
            pass  # delivered after __del__ returned: the flag must be set either way
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
    interrupt.clear()
    interrupt.check()  # a new run starts clean


def test_ignored_signals_stay_ignored() -> None:
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with cli_main._sigterm_as_interrupt():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_IGN, signal.SIG_DFL)
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_killed_run_leaves_no_final_file_and_rerun_finishes(tmp_path: Path) -> None:
    script = tmp_path / "long.vpy"
    script.write_text(VPY)
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "vsnystra", "-q", "restore", str(script), "-o", str(out), "--codec", "ffv1"]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc = subprocess.Popen(cmd, env={**ENV, "VSN_TEST_FRAMES": "200000"}, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (out.is_dir() and not _no_partials(out)):
                time.sleep(0.05)
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.3)
            proc.send_signal(sig)
            rc = proc.wait(timeout=60)
        finally:  # a failed assertion must not leave a 200000-frame encode running after pytest exits
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert not (out / "long.mkv").exists()
        if sig == signal.SIGTERM:
            assert rc == 130 and _no_partials(out)  # cleaned up on a catchable signal
        else:
            assert not _no_partials(out)  # SIGKILL leaves the temporary file, never the final name
    done = subprocess.run(cmd, env={**ENV, "VSN_TEST_FRAMES": "5"}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert probe(out / "long.mkv")["frames"] == 5
    assert _no_partials(out)  # the stale temporary file of the killed run is gone


# ---------------------------------------------------------------- weights sub-commands


def test_weights_list_and_unknown_model(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("VSNYSTRA_WEIGHTS_DIR", str(tmp_path))
    assert cli_main.main(["weights", "list", "--urls"]) == 0
    out = capsys.readouterr().out
    assert "rvrt-denoise-davis" in out and "006_RVRT_videodenoising_DAVIS_16frames.pth" in out
    assert "uformer-b-sidd" in out and "manual" in out
    clip = make_clip(tmp_path / "c.mkv", n=2, w=16, h=16, audio=False)
    rc = cli_main.main(["restore", str(clip), "--model", "rvrt-denoise-davis"])
    assert rc == 2 and "vsnystra weights download rvrt-denoise-davis" in caplog.text
    assert cli_main.main(["weights", "download", "no-such-thing"]) == 1


def test_prefetch_order_errors_and_close() -> None:
    from vsnystra.cli.pipeline import Prefetch

    assert [int(a[0]) for a in Prefetch(iter([np.full(1, i) for i in range(10)]), depth=2)] == list(range(10))

    def failing() -> Iterator[np.ndarray]:
        yield np.zeros(1)
        raise OSError("decode error in frame 1")

    p = Prefetch(failing())
    next(p)
    with pytest.raises(OSError, match="frame 1"):
        next(p)
    produced: list[int] = []

    def endless() -> Iterator[np.ndarray]:
        i = 0
        while True:
            produced.append(i)
            yield np.full(1, i)
            i += 1

    p = Prefetch(endless(), depth=2)
    next(p)
    p.close()
    count = len(produced)
    time.sleep(0.2)
    assert len(produced) == count < 10  # bounded read-ahead, stopped for good


@pytest.mark.skipif(not RVRT_DN.is_file(), reason="shared fixtures missing")
def test_attention_defaults_follow_the_architecture() -> None:
    from vsnystra.archs.registry import architecture, detect_file
    from vsnystra.attention.specs import Exact, PnPNystra
    from vsnystra.runtime.settings import attention_spec

    assert detect_file(RVRT_DN) is architecture("rvrt")
    assert detect_file(SWINIR_X2) is architecture("swinir")
    auto = attention_spec("auto", None, None, "swinir")
    assert auto == PnPNystra(landmarks=16, iters=6, threshold=None, pinv_init="matrix", policy="auto")
    enlarged = attention_spec("auto", None, None, "swinir", enlarged_window=True)
    assert enlarged == PnPNystra(landmarks=16, iters=2, threshold=5.0, pinv_init="matrix", policy="auto")
    forced = attention_spec("nystra", 8, None, "rvrt", enlarged_window=True)
    assert forced == PnPNystra(landmarks=8, iters=6, threshold=0.0, pinv_init="matrix", policy="always")
    uformer = attention_spec("nystra", None, None, "uformer")
    assert uformer == PnPNystra(landmarks=32, iters=8, threshold=None, pinv_init="matrix", policy="always")
    assert attention_spec("exact", None, None, "rvrt") == Exact()
    with pytest.raises(ValueError, match="only apply"):
        attention_spec("exact", 8, None, "rvrt")
    with pytest.raises(ValueError, match="must be one of"):
        attention_spec("fast", None, None, None)


@pytest.mark.parametrize(
    ("tags", "codec", "pix_fmt"),
    [
        ((6, 2, 6, 6), "x264", None),  # BT.601 full range, tagged
        ((2, 0, 2, 2), "ffv1", "gbrp10le"),  # untagged SD (BT.601 limited assumed), RGB output
    ],
)
def test_colour_survives_identity_restore(
    tmp_path: Path, fake: FakeModel, tags: tuple[int, int, int, int], codec: str, pix_fmt: str | None
) -> None:
    src = make_clip(tmp_path / "c.mkv", n=2, w=64, h=48, audio=False, tags=tags)
    argv = ["restore", str(src), "-o", str(tmp_path / "o"), "--codec", codec, "--crf", "0", "--preset", "ultrafast"]
    assert cli_main.main(argv + (["--pix-fmt", pix_fmt] if pix_fmt else [])) == 0
    dst = tmp_path / "o" / "c.mkv"
    out_tags = probe(dst)["colour"]
    assert isinstance(out_tags, Colour)
    if pix_fmt is None:
        assert out_tags == Colour(*tags)
    else:  # RGB-coded output is tagged RGB, the rest is kept
        assert (out_tags.colorspace, out_tags.color_primaries) == (0, tags[2])

    def planes(path: Path) -> tuple[np.ndarray, np.ndarray]:
        """(native planes of the first frame, RGB via the stream's tags) of a file."""
        with av.open(str(path)) as c:
            st = c.streams.video[0]
            f = next(c.decode(st))
            native = f.to_ndarray()[: f.height] if f.format.name in ("yuv420p", "yuvj420p") else np.zeros(1)
            return native, FrameConverter(Colour.of(st.codec_context)).to_array(f)

    (y_src, rgb_src), (y_dst, rgb_dst) = planes(src), planes(dst)
    if pix_fmt is None:  # same YUV format: the luma plane survives an identity restore (wrong matrix/range: no)
        assert np.abs(y_src.astype(int) - y_dst.astype(int)).mean() < 1.0
    else:  # RGB output: no chroma resampling on the way out, the decoded RGB is kept
        assert np.abs(rgb_src - rgb_dst).mean() < 0.5 / 255
