"""``vsnystra restore --deinterlace field|frame`` (issue 20): bwdif before the model, one frame per field at twice the
rate, through the segment planner; a segmented deinterlace gives the frames of one pass. A stand-in identity model
keeps these fast."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from test_cli_checks import fake, field_order, write_tff, write_video  # noqa: F401  (fake: the fixture used below)

from vsnystra.cli import main as cli_main
from vsnystra.cli.filework import decode_range
from vsnystra.cli.segments import FilePlan
from vsnystra.cli.worker import field_pts, output_timing

pytestmark = pytest.mark.usefixtures("fake")  # a stand-in identity model (test_cli_checks.fake)


def frames_of(path: Path) -> tuple[list[np.ndarray], list[Fraction], Fraction]:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        decoded = list(c.decode(v))
        rate = Fraction(v.average_rate) if v.average_rate else Fraction(0)
    return [f.to_ndarray() for f in decoded], [Fraction(f.pts) * f.time_base for f in decoded], rate


def comb(y: np.ndarray) -> int:
    return int(np.abs(np.diff(y.astype(int), axis=0)).sum())


def test_a_read_range_of_fields_decodes_its_frames_with_one_frame_of_context() -> None:
    assert decode_range((0, 4), 6, "") == ((0, 4), 0)
    assert decode_range((0, 4), 6, "field") == ((0, 3), 0)  # fields 0-3 are frames 0-1, plus frame 2 after
    assert decode_range((5, 9), 6, "field") == ((1, 6), 3)  # frames 2-4 and one before: drop fields 2, 3, 4
    assert decode_range((8, 12), 6, "field") == ((3, 6), 2)  # the last frames: no context after the end
    assert decode_range((2, 4), 6, "frame") == ((1, 5), 1)
    assert output_timing(Fraction(25), Fraction(1, 25), "field") == (Fraction(50), Fraction(1, 50))
    assert output_timing(Fraction(25), Fraction(1, 1000), "frame") == (Fraction(25), Fraction(1, 1000))
    assert field_pts([0, 40, 80], 40, "field") == [0, 40, 80, 120, 160, 200]
    assert field_pts([0, 40], 40, "frame") == [0, 40]


def test_damage_counts_decoded_frames_not_fields() -> None:
    plan = FilePlan("k", "s", 12, None, 600, [], [], [], None, True, expected=6, exact=True, decoded=6)
    assert plan.deinterlace == "" and plan.damage() is None
    plan.decoded = 5
    assert plan.damage() == "5 of 6 frames decodable (by the container's frame count; no decode errors)"


@pytest.mark.parametrize("mode", ["field", "frame"])
def test_deinterlace_in_segments_equals_one_pass(mode: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = write_tff(tmp_path / "tff.mkv", n=7)
    base = ["restore", str(src), "--codec", "ffv1", "--pix-fmt", "yuv444p", "--deinterlace", mode]
    assert cli_main.main([*base, "-o", str(tmp_path / "one")]) == 0
    assert "interlaced (top field first): deinterlaced with bwdif, one frame per " + mode in caplog.text
    assert cli_main.main([*base, "-o", str(tmp_path / "seg"), "--segment-frames", "3"]) == 0
    one, times, rate = frames_of(tmp_path / "one" / "tff.mkv")
    seg, seg_times, _ = frames_of(tmp_path / "seg" / "tff.mkv")
    with av.open(str(src)) as c:
        source = [f.to_ndarray() for f in c.decode(video=0)]
    per = 2 if mode == "field" else 1
    assert len(one) == len(seg) == 7 * per  # the planner counted bwdif's frames
    assert rate == 25 * per and times == [Fraction(i, 25 * per) for i in range(7 * per)]
    assert seg_times == times
    assert all(np.array_equal(a, b) for a, b in zip(one, seg, strict=True))  # the context of one pass at every cut
    assert comb(one[3 * per][0]) < comb(source[3][0]) / 2  # bwdif removed most of the combing
    assert field_order(tmp_path / "one" / "tff.mkv") in (0, 1)
    if mode == "field":  # the second field of a frame shows its bottom field's moment: the bar moved on
        top, bottom = one[6][0].astype(int), one[7][0].astype(int)
        assert np.abs(top - bottom).max() > 100


def test_progressive_inputs_of_the_batch_are_not_deinterlaced(tmp_path: Path) -> None:
    tff = write_tff(tmp_path / "tff.mkv", n=4)
    prog = write_video(tmp_path / "prog.mkv", 5)
    argv = ["restore", str(tff), str(prog), "-o", str(tmp_path / "o"), "--codec", "ffv1", "--deinterlace", "field"]
    assert cli_main.main(argv) == 0
    assert len(frames_of(tmp_path / "o" / "tff.mkv")[0]) == 8
    assert len(frames_of(tmp_path / "o" / "prog.mkv")[0]) == 5
