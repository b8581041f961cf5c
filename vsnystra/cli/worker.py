"""Restore one segment into its own file: the unit of work of every executor (in process or a Ray actor).

A segment file is written under a temporary name in the file's work folder (on a cluster: a folder every node
sees), checked (frame count and timestamps, read back from the file), fsynced and renamed; then its record
(size, sha256, packet timestamps, who made it) is written beside it, also by rename. The record is the commit:
a segment counts as done only when its record exists and the file still matches its size and checksum, so a
worker or driver killed at any point leaves at worst a temporary file that is never used.

Segments are NUT files: NUT keeps every timestamp exactly in the source's time base (Matroska rounds to
milliseconds). Timestamps are written shifted by ``pts_offset`` so that no decode timestamp is negative (NUT
would otherwise shift the first segment by the encoder's delay); assembly subtracts it again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from vsnystra.cli.media import EncodeSettings
from vsnystra.cli.pipeline import PREFETCH_FRAMES, Prefetch, Restorer, _open_av_source, _run
from vsnystra.cli.scan import frame_checksum
from vsnystra.cli.segments import Segment

log = logging.getLogger(__name__)

SEGMENT_FORMAT = "nut"
SEGMENT_SUFFIX = ".nut"
TEMP_TAG = ".tmp-"
OFFSET_FRAMES = 64  # more than any encoder's reorder delay (H.264/HEVC allow 16)
DEINTERLACE_MODES = {"frame": 1, "field": 2}  # bwdif's output frames per input frame


@dataclass(frozen=True)
class SegmentJob:
    """Everything a worker needs for one segment; small and picklable (it travels to Ray actors)."""

    key: str  # the final output path: which file this segment belongs to
    src: str  # absolute path of the input, the same on every node
    workdir: str  # the file's work folder, the same on every node
    fingerprint: str
    segment: Segment
    decode_pts: tuple[int | None, ...]  # of the frames read, in decode order
    checksums: tuple[int, ...] | None  # of the frames read
    out_pts: tuple[int, ...]  # of the frames written
    seek: bool
    encode: EncodeSettings
    attempt: int = 1
    deinterlace: str = ""  # "frame" or "field": bwdif before the model (see ``deinterlaced``); "": none
    decode: tuple[int, int] | None = None  # decoded frames [a, b) when they differ from the read range (deinterlace)
    drop: int = 0  # deinterlaced frames before the read range (context bwdif needs), dropped

    @property
    def decode_span(self) -> tuple[int, int]:
        """Decoded frames (source numbering): the read range, or with ``deinterlace`` the frames it comes from."""
        return self.decode if self.decode is not None else self.segment.read

    @property
    def path(self) -> Path:
        return Path(self.workdir) / (self.segment.name + SEGMENT_SUFFIX)

    def retry(self) -> SegmentJob:
        return dataclasses.replace(self, attempt=self.attempt + 1)

    @property
    def record_path(self) -> Path:
        return Path(self.workdir) / (self.segment.name + ".json")


class SeekMismatch(RuntimeError):
    """The frames after a seek are not the planned ones: decode from the start of the file instead."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}{TEMP_TAG}{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    _fsync(tmp)
    os.replace(tmp, path)


def read_record(job: SegmentJob, *, verify: bool = True) -> dict[str, Any] | None:
    """The segment's record if the segment is done: record present, same plan, file of that size and checksum."""
    try:
        rec: dict[str, Any] = json.loads(job.record_path.read_text())
    except (OSError, ValueError):
        return None
    if rec.get("fingerprint") != job.fingerprint or rec.get("index") != job.segment.index:
        return None
    try:
        if job.path.stat().st_size != rec.get("size"):
            return None
    except OSError:
        return None
    if verify and _sha256(job.path) != rec.get("sha256"):
        log.warning("%s: checksum mismatch, restoring it again", job.path)
        return None
    return rec


def _decoded(inp: Any, vin: Any, conv: Any, job: SegmentJob, seek: bool) -> Iterator[np.ndarray]:
    """The segment's read range as float RGB (deinterlaced if asked)."""
    frames: Iterator[av.VideoFrame] = _checked(inp, vin, job, seek)
    if job.deinterlace:
        a, b = job.segment.read
        frames = itertools.islice(deinterlaced(frames, vin, job.deinterlace), job.drop, job.drop + b - a)
    for frame in frames:
        yield conv.to_array(frame)


def deinterlaced(frames: Iterator[av.VideoFrame], vin: Any, mode: str = "frame") -> Iterator[av.VideoFrame]:
    """FFmpeg's bwdif through PyAV's filter graph: every frame, field order from the frames; ``mode`` "frame" gives
    one frame per frame, "field" one per field (twice the frame rate). A frame's output depends on it and its two
    neighbours only, so feeding one frame of context on each side gives the frames of a pass over the whole file."""
    if mode not in DEINTERLACE_MODES:
        raise ValueError(f"vsnystra restore: --deinterlace must be one of {', '.join(DEINTERLACE_MODES)}, got {mode!r}")
    graph = av.filter.Graph()
    buf = graph.add_buffer(template=vin)
    bwdif = graph.add("bwdif", f"mode=send_{mode}:parity=auto:deint=all")
    sink = graph.add("buffersink")
    buf.link_to(bwdif)
    bwdif.link_to(sink)
    graph.configure()

    def drain() -> Iterator[av.VideoFrame]:
        while True:
            try:
                out = graph.vpull()
            except (BlockingIOError, EOFError):
                return
            yield out

    for frame in frames:
        graph.vpush(frame)
        yield from drain()
    graph.vpush(None)
    yield from drain()


def _checked(inp: Any, vin: Any, job: SegmentJob, seek: bool) -> Iterator[av.VideoFrame]:
    """The segment's read range as decoded frames, each checked against the planning pass."""
    start, end = job.decode_span
    want = end - start
    i = 0 if seek else -start  # index relative to the read range; negative: frames before it
    if seek:
        inp.seek(job.decode_pts[0], stream=vin, backward=True, any_frame=False)
    for packet in inp.demux(vin):
        try:
            decoded = packet.decode()
        except av.FFmpegError:  # skipped as the planning pass skipped it (scan.scan)
            continue
        for frame in decoded:
            if not isinstance(frame, av.VideoFrame):
                continue
            if i < 0:
                i += 1
                continue
            if seek:
                if i == 0 and frame.pts is not None and frame.pts < job.decode_pts[0]:  # type: ignore[operator]
                    continue  # decoding from the keyframe before the segment
                if frame.pts != job.decode_pts[i]:
                    raise SeekMismatch(f"frame pts {frame.pts} after the seek, expected {job.decode_pts[i]}")
            if job.checksums is not None and frame_checksum(frame) != job.checksums[i]:
                if seek:
                    raise SeekMismatch(f"frame {start + i} differs from the planning pass after a seek")
                raise RuntimeError(f"frame {start + i} decodes differently than in the planning pass")
            yield frame
            i += 1
            if i == want:
                return
    raise RuntimeError(f"the input ended {want - max(i, 0)} frames before the end of segment {job.segment.index}")


def _restored(frames: Iterator[np.ndarray], job: SegmentJob, restorer: Restorer) -> Iterator[np.ndarray]:
    """Run the model piece by piece (one call per shot) and keep the written frames."""
    for piece in job.segment.pieces:
        (ra, rb), (wa, wb) = piece.read, piece.write
        n = 0
        for y in restorer(itertools.islice(frames, rb - ra)):
            if wa <= ra + n < wb:
                yield y
            n += 1
        if n != rb - ra:
            raise RuntimeError(f"the model returned {n} frames for {rb - ra}")


def _encode(
    job: SegmentJob, tmp: Path, restorer: Restorer, on_frame: Callable[[int], None] | None, seek: bool
) -> tuple[int, Fraction]:
    """Decode, restore and encode the segment into ``tmp``; returns the pts offset used and the output time base."""
    with av.open(job.src, "r") as inp:
        source = _open_av_source(inp, warn=False)
        source.rate, source.time_base = output_timing(source.rate, source.time_base, job.deinterlace)
        step = max(1, round(1 / (source.rate * source.time_base)))
        offset = max(0, -job.out_pts[0]) + OFFSET_FRAMES * step
        decoded = Prefetch(_decoded(inp, source.video_stream, source.converter, job, seek), depth=PREFETCH_FRAMES)
        try:
            segment_source = dataclasses.replace(
                source,
                frames=_restored(decoded, job, restorer),
                pts=deque(p + offset for p in job.out_pts),
                total=job.segment.frames,
                copy_streams=[],
                video_stream=None,
                container=None,
                pending=deque(),
            )
            n = _run(segment_source, inp, tmp, None, job.encode, SEGMENT_FORMAT, None, on_frame)
        finally:
            decoded.close()  # the decoding thread must be gone before the input closes
    if n != job.segment.frames:
        raise RuntimeError(f"segment {job.segment.index}: wrote {n} frames, expected {job.segment.frames}")
    return offset, Fraction(source.time_base)


def output_timing(rate: Fraction, time_base: Fraction, deinterlace: str) -> tuple[Fraction, Fraction]:
    """Frame rate and time base of the output: the source's, or for one frame per field twice the rate in half the
    time base (so the second field's time, half a frame after the first, is a whole number of ticks)."""
    per = DEINTERLACE_MODES.get(deinterlace, 1)
    return rate * per, time_base / per


def field_pts(out_pts: list[int], step: int, deinterlace: str) -> list[int]:
    """Output timestamps of the deinterlaced frames from the source frames' (``step``: a source frame's duration):
    in the halved time base of ``output_timing``, a frame at ``p`` gives ``2p`` and, per field, ``2p + step``."""
    if DEINTERLACE_MODES.get(deinterlace, 1) == 1:
        return list(out_pts)
    return [q for p in out_pts for q in (2 * p, 2 * p + step)]


def _packet_pts(path: Path) -> tuple[list[int], Fraction]:
    """Timestamps of the video packets of a segment file, in decode order, and their time base."""
    with av.open(str(path)) as c:
        st = c.streams.video[0]
        tb = Fraction(st.time_base.numerator, st.time_base.denominator)  # type: ignore[union-attr]
        pts = [int(p.pts) for p in c.demux(st) if p.size and p.pts is not None]
    return pts, tb


def run_segment(
    job: SegmentJob, restorer: Restorer, on_frame: Callable[[int], None] | None = None, node: str | None = None
) -> dict[str, Any]:
    """Restore ``job`` into its segment file and commit it; returns the record. Cleans up after any failure."""
    start, cpu = time.monotonic(), time.process_time()
    Path(job.workdir).mkdir(parents=True, exist_ok=True)
    tmp = job.path.with_name(f"{job.path.name}{TEMP_TAG}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    seek = job.seek and job.decode_span[0] > 0
    try:
        try:
            offset, src_tb = _encode(job, tmp, restorer, on_frame, seek)
        except SeekMismatch as e:
            log.warning("segment %d: %s; decoding from the start of the file", job.segment.index, e)
            tmp.unlink(missing_ok=True)
            offset, src_tb = _encode(job, tmp, restorer, on_frame, seek=False)
        pts, tb = _packet_pts(tmp)
        shifted = sorted(p * tb / src_tb - offset for p in pts)
        if shifted != list(job.out_pts):
            raise RuntimeError(f"segment {job.segment.index}: the file's timestamps are not the planned ones")
        _fsync(tmp)
        size = tmp.stat().st_size
        digest = _sha256(tmp)
        os.replace(tmp, job.path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    record: dict[str, Any] = {
        "fingerprint": job.fingerprint,
        "index": job.segment.index,
        "file": job.path.name,
        "size": size,
        "sha256": digest,
        "frames": job.segment.frames,
        "packet_pts": pts,
        "time_base": [tb.numerator, tb.denominator],
        "pts_offset": offset,
        "node": node or socket.gethostname(),
        "pid": os.getpid(),
        "seconds": time.monotonic() - start,
        "cpu_seconds": time.process_time() - cpu,  # of the whole worker process: < seconds x threads when starved
        "attempt": job.attempt,
    }
    write_json_atomic(job.record_path, record)
    return record
