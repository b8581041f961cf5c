"""The segment planner and the in-process executor of `vsnystra restore`: every frame written once, RVRT's temporal
context such that a segmented restore is bit-identical to one pass per shot, resume, lossless joins."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from restore_fakes import decoded, make_video, one_thread, tiny_loaded

from vsnystra.cli import distribute, worker
from vsnystra.cli import main as cli_main
from vsnystra.cli.filework import FileWork, make_job
from vsnystra.cli.local_executor import LocalExecutor
from vsnystra.cli.media import Colour, EncodeSettings, FrameConverter
from vsnystra.cli.pipeline import _open_av_source, process
from vsnystra.cli.segments import FilePlan, chunk_spans, plan_segments, read_span, shots, straddling
from vsnystra.runtime.video import chunk_plan

FFV1 = EncodeSettings(codec="ffv1")
FIELDS = "stream=codec_type,codec_name,nb_read_frames"

# ---------------------------------------------------------------- the planner


def _covering(shot: tuple[int, int], temporal: tuple[int, int], frame: int) -> list[tuple[int, int]]:
    s, e = shot
    if not temporal[0]:
        return [shot]
    return [(s + a, s + b) for a, b in chunk_plan(e - s, *temporal) if s + a <= frame < s + b]


@pytest.mark.parametrize("temporal", [None, (4, 2), (6, 2), (3, 1), (2, 0), (5, 0), (16, 2), (0, 2)])
def test_plan_writes_every_frame_once_with_the_context_of_one_pass(temporal: tuple[int, int] | None) -> None:
    rng = random.Random(7)
    for _ in range(60):
        n = rng.randint(1, 120)
        cuts = sorted(rng.sample(range(1, n), min(n - 1, rng.randint(0, 6)))) if n > 1 else []
        max_frames = rng.randint(1, 40)
        plan = plan_segments(n, cuts, temporal, max_frames)
        written = [f for seg in plan for p in seg.pieces for f in range(*p.write)]
        assert written == list(range(n))  # every frame once, in order
        for seg in plan:
            assert all(a.read[1] == b.read[0] for a, b in itertools.pairwise(seg.pieces))  # one contiguous read
            if temporal is None or temporal[0]:
                assert seg.frames <= max_frames
            for p in seg.pieces:
                assert p.shot[0] <= p.read[0] <= p.write[0] < p.write[1] <= p.read[1] <= p.shot[1]
                if temporal is None:
                    assert p.read == p.write and (seg.frames <= max_frames)
                    continue
                assert not [c for c in cuts if p.shot[0] < c < p.shot[1]]  # a piece never crosses a cut
                needed = [c for f in range(*p.write) for c in _covering(p.shot, temporal, f)]
                assert p.read == (min(s for s, _ in needed), max(e for _, e in needed))
                if temporal[0]:
                    assert p.write[0] - p.read[0] < temporal[0] and p.read[1] - p.write[1] < temporal[0]


def test_plan_packs_short_shots_and_cuts_long_ones_where_few_chunks_straddle() -> None:
    plan = plan_segments(100, [10, 20, 30, 95], (8, 2), 25)
    assert [[p.shot for p in s.pieces] for s in plan][:2] == [[(0, 10), (10, 20)], [(20, 30)]]
    long_parts = [s.pieces[0] for s in plan if s.pieces[0].shot == (30, 95)]
    assert len(long_parts) == 3 and all(p.write[1] - p.write[0] <= 25 for p in long_parts)
    spans = chunk_spans((30, 95), (8, 2))
    for p in long_parts[1:]:  # one chunk straddles each cut (the least possible with overlap > 0)
        assert straddling(spans, p.write[0]) == 1
    assert read_span((30, 95), long_parts[1].write, (8, 2)) == long_parts[1].read
    image = plan_segments(50, [], None, 20)[1].pieces[0]  # equal parts, no context
    assert image.read == image.write == (17, 33)
    assert shots(10, [0, 3, 3, 12]) == [(0, 3), (3, 10)]
    with pytest.raises(ValueError, match="segment-frames"):
        plan_segments(10, [], None, 0)


def test_plan_json_round_trip() -> None:
    plan = FilePlan("f", "/x.mkv", 12, (4, 2), 5, [6], list(range(12)), list(range(12)), None, True)
    plan.segments = plan_segments(12, [6], (4, 2), 5)
    again = FilePlan.from_json(plan.to_json())
    assert again == plan


# ---------------------------------------------------------------- local executor == one pass


def _restore(src: Path, out: Path, loaded: object, encode: EncodeSettings = FFV1, **kw: object) -> distribute.Summary:
    opts = distribute.Options(out_dir=out, encode=encode, progress=False, **kw)  # type: ignore[arg-type]
    return distribute.restore_files([src], LocalExecutor(loaded), opts)


@pytest.fixture(scope="module")
def smooth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("in") / "smooth.mkv", 17, codec="libx264")


def test_segmented_restore_equals_one_pass(smooth: Path, tmp_path: Path) -> None:
    loaded = tiny_loaded(chunk=4, overlap=2)
    process(smooth, tmp_path / "one.mkv", restorer=loaded.restorer, encode=FFV1, container_format="matroska")
    summary = _restore(smooth, tmp_path / "seg", loaded, segment_frames=5)
    assert summary.done and "4 segments (4 restored" in summary.render()
    one, seg = decoded(tmp_path / "one.mkv"), decoded(tmp_path / "seg" / "smooth.mkv")
    assert all(np.array_equal(a, b) for a, b in zip(one[0], seg[0], strict=True))  # bit-identical frames
    assert one[1] == seg[1] and one[2] == seg[2] and seg[2]  # same times, same audio packets
    assert not (tmp_path / "seg" / ".smooth.mkv.segments").exists()  # work folder gone once the output is in
    # the context matters: frames 5-9 restored on their own come out differently
    alone = loaded.restorer(iter(_frames(smooth)[5:10]))
    conv = FrameConverter(_colour(smooth))
    assert not np.array_equal(conv.to_frame(next(alone), "yuv444p16le", src_size=(64, 48)).to_ndarray(), seg[0][5])


def _colour(path: Path) -> Colour:
    with av.open(str(path)) as c:
        return _open_av_source(c).colour


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return list(_open_av_source(c).frames)


def test_shots_are_restored_on_their_own(tmp_path: Path) -> None:
    src = make_video(tmp_path / "cuts.mkv", 14, cuts=(5, 9))
    loaded = tiny_loaded(chunk=4, overlap=2)
    summary = _restore(src, tmp_path / "a", loaded, segment_frames=3)
    assert summary.done
    frames = _frames(src)
    conv = FrameConverter(_colour(src))
    expected = [y for a, b in [(0, 5), (5, 9), (9, 14)] for y in loaded.restorer(iter(frames[a:b]))]
    got = decoded(tmp_path / "a" / "cuts.mkv")[0]
    for y, g in zip(expected, got, strict=True):
        assert np.array_equal(conv.to_frame(y, "yuv444p16le", src_size=(64, 48)).to_ndarray(), g)
    whole = _restore(src, tmp_path / "b", loaded, segment_frames=100)  # one segment, three pieces
    assert whole.done
    assert all(np.array_equal(a, b) for a, b in zip(got, decoded(tmp_path / "b" / "cuts.mkv")[0], strict=True))


def test_a_seek_gives_the_frames_of_a_decode_from_the_start(smooth: Path, tmp_path: Path) -> None:
    loaded = tiny_loaded(chunk=4, overlap=2)
    f = FileWork(smooth, tmp_path / "o.mkv", "t")
    from vsnystra.cli.scan import scan

    s = scan(smooth, threshold=0.1, find_cuts=True)
    assert s.seekable and s.checksums is not None
    plan = FilePlan("fp", str(smooth), s.frames, (4, 2), 6, s.cuts, s.decode_pts, s.out_pts, s.checksums, True)
    plan.segments = plan_segments(s.frames, s.cuts, (4, 2), 6)
    job = make_job(f, plan, plan.segments[2], FFV1)
    assert job.segment.read[0] > 6  # after the second keyframe (GOP of 6 with B-frames)
    seeking = worker.run_segment(job, loaded.restorer)
    from_start = worker.run_segment(dataclasses.replace(job, seek=False), loaded.restorer)
    assert seeking["sha256"] == from_start["sha256"]
    wrong = dataclasses.replace(job, checksums=(0, *job.checksums[1:]))  # type: ignore[misc]
    with pytest.raises(RuntimeError, match="decodes differently"):  # seek mismatch, then a decode from the start
        worker.run_segment(wrong, loaded.restorer)
    assert not [p for p in Path(job.workdir).iterdir() if worker.TEMP_TAG in p.name]


class Interrupting:
    """Restorer wrapper raising KeyboardInterrupt (as the SIGTERM handler does) after ``after`` frames in all."""

    def __init__(self, inner: object, after: int) -> None:
        self.inner, self.after, self.frames = inner, after, 0

    def __call__(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for y in self.inner(frames):  # type: ignore[operator]
            self.frames += 1
            if self.frames > self.after:
                raise KeyboardInterrupt
            yield y


def test_interrupted_run_resumes_with_the_unfinished_segments_only(smooth: Path, tmp_path: Path) -> None:
    loaded = tiny_loaded(chunk=4, overlap=2)
    reads = [s.read[1] - s.read[0] for s in plan_segments(17, [], (4, 2), 4)]
    stop = dataclasses.replace(loaded, restorer=Interrupting(loaded.restorer, reads[0] + reads[1] + 1))
    first = _restore(smooth, tmp_path / "o", stop, segment_frames=4)
    assert first.interrupted and not (tmp_path / "o" / "smooth.mkv").exists()
    work = tmp_path / "o" / ".smooth.mkv.segments"
    done = sorted(p.name for p in work.glob("seg-*.json"))
    assert done == ["seg-00000.json", "seg-00001.json"] and not list(work.glob(f"*{worker.TEMP_TAG}*"))
    second = _restore(smooth, tmp_path / "o", loaded, segment_frames=4)
    assert "5 segments (3 restored, 2 reused, 0 retried)" in second.render()
    fresh = _restore(smooth, tmp_path / "fresh", loaded, segment_frames=4)
    assert fresh.done
    a, b = decoded(tmp_path / "o" / "smooth.mkv"), decoded(tmp_path / "fresh" / "smooth.mkv")
    assert all(np.array_equal(x, y) for x, y in zip(a[0], b[0], strict=True))
    # other settings: the old segments are not reused
    work.mkdir()
    (work / "plan.json").write_text(json.dumps({"version": 1, "fingerprint": "old"}))
    (tmp_path / "o" / "smooth.mkv").unlink()
    third = _restore(smooth, tmp_path / "o", loaded, segment_frames=4, scene_threshold=0.2)
    assert "(5 restored, 0 reused" in third.render()


def _nal_units(data: bytes, *, annex_b: bool) -> list[bytes]:
    """A packet's NAL units: start-code separated (as encoded) or 4-byte length-prefixed (as Matroska stores them)."""
    if annex_b:
        return [u.rstrip(b"\0") for u in data.replace(b"\0\0\0\1", b"\0\0\1").split(b"\0\0\1") if u]
    units, i = [], 0
    while i < len(data):
        n = int.from_bytes(data[i : i + 4], "big")
        units.append(data[i + 4 : i + 4 + n])
        i += 4 + n
    return units


def _ffprobe(path: Path) -> list[dict[str, str]]:
    out = subprocess.run(
        [*("ffprobe", "-v", "error", "-count_frames", "-of", "json", str(path)), "-show_entries", FIELDS],
        capture_output=True,
        text=True,
        check=True,
    )
    return list(json.loads(out.stdout)["streams"])


@pytest.mark.parametrize(("codec", "name", "suffix"), [("x265", "hevc", ".mkv"), ("x264", "h264", ".mov")])
def test_x26x_segments_join_without_reencoding(
    smooth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, codec: str, name: str, suffix: str
) -> None:
    monkeypatch.setattr(distribute.shutil, "rmtree", lambda *a, **k: None)  # keep the segments to compare
    encode = EncodeSettings(codec=codec, preset="ultrafast")
    summary = _restore(smooth, tmp_path, tiny_loaded(), encode, segment_frames=6, suffix=suffix)
    out, work = tmp_path / f"smooth{suffix}", tmp_path / f".smooth{suffix}.segments"
    assert summary.done
    streams = [(s["codec_type"], s["codec_name"], s.get("nb_read_frames")) for s in _ffprobe(out)]
    assert streams == [("video", name, "17"), ("audio", "pcm_s16le", streams[1][2])]  # one video stream
    with av.open(str(out)) as c:
        joined = [_nal_units(bytes(p), annex_b=False) for p in c.demux(video=0) if p.size]
    parts = []
    for seg in sorted(work.glob("seg-*.nut")):
        with av.open(str(seg)) as c:
            parts += [_nal_units(bytes(p), annex_b=True) for p in c.demux(video=0) if p.size]
    assert len(parts) == 17 and joined == parts  # the segments' NAL units, byte for byte: nothing re-encoded
    assert decoded(out)[1] == decoded(smooth)[1]  # frame times as in the source
    shutil.rmtree(work)


# ---------------------------------------------------------------- the command line

REPO = Path(__file__).resolve().parents[1]
SWINIR_X2 = REPO.parent / "shared" / "fixtures" / "parity" / "swinir_classical_x2.pth"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def test_ray_without_ray_installed_says_how_to_install_it(
    smooth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for name in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_USAGE_STATS_ENABLED"):  # set by --ray local: restored
        monkeypatch.setenv(name, "0")
    argv = ["restore", str(smooth), "-o", str(tmp_path), "--model", "rvrt-denoise-small", "--ray", "local:2"]
    assert cli_main.main(argv) == 2
    assert "--ray needs the ray package; install it with pip install 'vsnystra[ray]'" in caplog.text
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # honoured like --ray
    assert cli_main.main(argv[:-2]) == 2 and caplog.text.count("pip install 'vsnystra[ray]'") == 2
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not SWINIR_X2.is_file(), reason="shared fixtures missing")
def test_killed_driver_rerun_restores_only_the_unfinished_segments(tmp_path: Path) -> None:
    src = make_video(tmp_path / "k.mkv", 12, w=32, h=24)
    out, work = tmp_path / "o", tmp_path / "o" / ".k.mkv.segments"
    cmd = [sys.executable, "-m", "vsnystra", "-q", "restore", str(src), "-o", str(out), "--model", str(SWINIR_X2)]
    cmd += ["--device", "cpu", "--codec", "ffv1", "--segment-frames", "1", "--threads", "1"]
    proc = subprocess.Popen(cmd, env=ENV, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(list(work.glob("seg-*.json"))) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        proc.kill()  # SIGKILL: no cleanup at all
    finally:
        proc.wait()
    finished = len(list(work.glob("seg-*.json")))
    assert 2 <= finished < 12 and not (out / "k.mkv").exists()
    rerun = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"12 segments ({12 - finished} restored, {finished} reused, 0 retried)" in rerun.stderr
    from vsnystra.cli.model import load
    from vsnystra.runtime.settings import Options

    with one_thread():
        loaded = load(Options(model=str(SWINIR_X2), device="cpu"))
        assert _restore(src, tmp_path / "fresh", loaded).done
    a, b = decoded(out / "k.mkv"), decoded(tmp_path / "fresh" / "k.mkv")
    assert len(a[0]) == 12 and all(np.array_equal(x, y) for x, y in zip(a[0], b[0], strict=True))
    assert a[2] == b[2] and not work.exists()
