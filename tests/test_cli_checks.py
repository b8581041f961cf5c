"""``vsnystra restore`` on awkward media and user mistakes: checks before any work, one-frame files, truncated and
interlaced inputs (issue 20). A stand-in identity model keeps these fast."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from test_cli import FakeModel, make_clip, probe

from vsnystra.cli import main as cli_main
from vsnystra.cli import model as cli_model
from vsnystra.cli.pipeline import sane_dts


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeModel:
    m = FakeModel()

    def load(settings: cli_model.Options) -> cli_model.LoadedModel:
        return cli_model.LoadedModel(torch.nn.Identity(), "fake", 1, torch.device("cpu"), torch.float32, m)

    monkeypatch.setattr(cli_model, "load", load)
    return m


def write_video(path: Path, n: int, *, w: int = 64, h: int = 48, rate: int = 25, fmt: str | None = None) -> Path:
    """n frames of H.264 as ffmpeg's defaults write them (an .mp4 gets the 1/12800 time base)."""
    rng = np.random.default_rng(3)
    with av.open(str(path), "w", format=fmt) as out:
        v = out.add_stream("libx264", rate=rate, options={"preset": "ultrafast"})
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            f.pts = i
            f.time_base = Fraction(1, rate)
            for p in v.encode(f):
                out.mux(p)
        for p in v.encode(None):
            out.mux(p)
    return path


# ---------------------------------------------------------------- one-frame files


def test_an_uninitialised_dts_is_replaced() -> None:
    assert sane_dts(32768, 199004925949870788, None, 512) == 32768  # libx265's dts for a lone frame
    assert sane_dts(32768, -7234017283807667236, None, 512) == 32768
    assert sane_dts(33280, 32256, 31744, 512) == 32256  # a plausible reordering dts is kept
    assert sane_dts(33280, 31744, 31744, 512) == 32256  # not after the previous one: the next frame's
    assert sane_dts(None, 5, None, 1) == 5


@pytest.mark.parametrize("container", ["mkv", "mp4"])
def test_one_frame_mp4_with_the_default_x265(container: str, tmp_path: Path, fake: FakeModel) -> None:
    src = write_video(tmp_path / "one.mp4", 1)
    for attempt in range(3):  # the dts libx265 hands out is uninitialised memory: try more than once
        out = tmp_path / f"out{attempt}"
        assert cli_main.main(["restore", str(src), "-o", str(out), "--container", container]) == 0
        info = probe(out / f"one.{container}")
        assert (info["frames"], info["pix_fmt"]) == (1, "yuv420p10le")


# ---------------------------------------------------------------- mistakes found before any work


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--crf", "99"], "--crf 99 is out of range for x265; use 0-51"),
        (["--codec", "x264", "--crf", "-3"], "--crf -3 is out of range for x264; use 0-51"),
        (["--preset", "warp9"], "--preset warp9 is not an x265 preset; use one of ultrafast,"),
        (["--pix-fmt", "yuv999"], "--pix-fmt yuv999 is not a pixel format libx265 encodes; use one of yuv420p,"),
        (["--codec", "x264", "--pix-fmt", "yuv444p16le"], "--pix-fmt yuv444p16le is not a pixel format libx264"),
        (["--container", "mp4"], "mp4 cannot hold SRT subtitles: use .mkv or --no-subtitles"),
        (["--container", "mov"], "mov cannot hold SRT subtitles: use .mkv or --no-subtitles"),
    ],
)
def test_encoder_and_container_mistakes_are_one_line_before_the_model_loads(
    extra: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    src = make_clip(tmp_path / "s.mkv", n=2, w=64, h=48, subs=True)

    def load(settings: cli_model.Options) -> cli_model.LoadedModel:
        raise AssertionError("the model must not load before the settings are checked")

    monkeypatch.setattr(cli_model, "load", load)
    assert cli_main.main(["restore", str(src), "-o", str(tmp_path / "o"), *extra]) == 2
    records = [r.getMessage() for r in caplog.records if r.levelname != "DEBUG"]
    assert len(records) == 1 and message in records[0] and "\n" not in records[0], caplog.text
    assert not (tmp_path / "o").exists()


def test_no_subtitles_lets_mp4_hold_the_rest(tmp_path: Path, fake: FakeModel) -> None:
    src = make_clip(tmp_path / "s.mkv", n=2, w=64, h=48, audio=False, subs=True)
    argv = ["restore", str(src), "-o", str(tmp_path / "o"), "--container", "mp4", "--no-subtitles"]
    assert cli_main.main([*argv, "--preset", "ultrafast"]) == 0
    info = probe(tmp_path / "o" / "s.mp4")
    assert info["frames"] == 2 and info["subtitle"] is None


@pytest.mark.parametrize("where", ["file", "under-a-file", "proc"])
def test_an_output_folder_that_cannot_be_written_is_one_line(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    src = write_video(tmp_path / "a.mkv", 2)
    afile = tmp_path / "taken"
    afile.write_text("x")
    out = {"file": afile, "under-a-file": afile / "sub", "proc": Path("/proc/vsnystra-out")}[where]
    monkeypatch.setattr(cli_model, "load", lambda s: pytest.fail("the model loaded"))
    assert cli_main.main(["restore", str(src), "-o", str(out)]) == 2
    records = [r for r in caplog.records if r.levelname != "DEBUG"]
    assert len(records) == 1 and "\n" not in records[0].getMessage(), caplog.text
    err = records[0].getMessage()
    fix = {"file": "is a file, not a folder", "under-a-file": "is a file; name another -o folder"}
    assert fix.get(where, "name a writable -o folder") in err
    assert afile.read_text() == "x"


# ---------------------------------------------------------------- damaged inputs


def test_a_truncated_input_is_reported_and_strict_fails_it(
    tmp_path: Path, fake: FakeModel, capsys: pytest.CaptureFixture[str]
) -> None:
    full = write_video(tmp_path / "full.mkv", 24)
    cut = tmp_path / "cut.mkv"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) * 55 // 100])  # the header still says 0.96 s: 24 frames at 25 fps
    assert cli_main.main(["restore", str(full), str(cut), "-o", str(tmp_path / "o"), "--codec", "ffv1"]) == 0
    decoded = probe(tmp_path / "o" / "cut.mkv")["frames"]
    assert isinstance(decoded, int) and 0 < decoded < 24
    err = capsys.readouterr().err
    assert "2 done, 0 skipped, 0 failed" in err
    assert f"WARNING {cut}: {decoded} of 24 frames decodable (by the container's duration" in err
    assert f"WARNING {full}" not in err
    argv = ["restore", str(cut), "-o", str(tmp_path / "s"), "--codec", "ffv1", "--strict"]
    assert cli_main.main(argv) == 1
    err = capsys.readouterr().err
    assert f"FAILED {cut}: {decoded} of 24 frames decodable" in err and "--strict" in err
    assert not (tmp_path / "s" / "cut.mkv").exists()


# ---------------------------------------------------------------- interlaced inputs


def write_tff(path: Path, n: int = 6, w: int = 64, h: int = 48) -> Path:
    """Lossless frames whose two fields show different moments (combing), tagged top field first."""
    with av.open(str(path), "w") as out:
        v = out.add_stream("ffv1", rate=25)
        v.width, v.height, v.pix_fmt = w, h, "yuv444p"
        v.codec_context.field_order = 2  # AV_FIELD_TT
        for i in range(n):
            img = np.zeros((h, w, 3), np.uint8)
            img[0::2, 4 * i : 4 * i + 16] = 220  # top field: a bar at one place
            img[1::2, 4 * i + 2 : 4 * i + 18] = 220  # bottom field: half a frame later
            f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv444p")
            f.pts = i
            for p in v.encode(f):
                out.mux(p)
        for p in v.encode(None):
            out.mux(p)
    return path


def field_order(path: Path) -> int:
    with av.open(str(path)) as c:
        return int(c.streams.video[0].codec_context.field_order)


def test_interlaced_input_is_refused_unless_deinterlaced_or_declared_progressive(
    tmp_path: Path, fake: FakeModel, caplog: pytest.LogCaptureFixture
) -> None:
    src = write_tff(tmp_path / "tff.mkv")
    assert field_order(src) == 2
    base = ["restore", str(src), "--codec", "ffv1", "--pix-fmt", "yuv444p"]
    assert cli_main.main([*base, "-o", str(tmp_path / "r")]) == 2
    assert "is interlaced (top field first); add --deinterlace frame or field (bwdif) or --progressive" in caplog.text
    assert fake.calls == 0 and not (tmp_path / "r").exists()

    caplog.clear()
    assert cli_main.main([*base, "-o", str(tmp_path / "p"), "--progressive"]) == 0
    assert "treated as progressive (--progressive)" in caplog.text
    kept = tmp_path / "p" / "tff.mkv"
    assert field_order(kept) == 2  # the output stays interlaced: its field order is kept
    with av.open(str(src)) as a, av.open(str(kept)) as b:
        pairs = zip(a.decode(video=0), b.decode(video=0), strict=True)
        assert all(np.abs(x.to_ndarray().astype(int) - y.to_ndarray()).max() <= 2 for x, y in pairs)  # untouched

    assert cli_main.main([*base, "-o", str(tmp_path / "d"), "--deinterlace", "frame", "--segment-frames", "4"]) == 0
    done = tmp_path / "d" / "tff.mkv"
    assert field_order(done) in (0, 1)
    with av.open(str(src)) as a, av.open(str(done)) as b:
        before = [f.to_ndarray() for f in a.decode(video=0)]
        after = [f.to_ndarray() for f in b.decode(video=0)]
    assert len(after) == len(before) == 6  # one frame per frame
    y_in, y_out = before[2][0].astype(int), after[2][0].astype(int)
    comb = lambda y: np.abs(np.diff(y, axis=0)).sum()  # noqa: E731
    assert comb(y_out) < comb(y_in) / 2  # bwdif removed most of the combing
