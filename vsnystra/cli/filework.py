"""The per-file steps of a segmented restore: plan (or reuse the plan of an earlier run), make the segment jobs,
assemble the output. Plain functions of one file, so the driver can run them in background threads.

Work folder: ``<output folder>/.<output name>.segments/`` holds ``plan.json`` and the segment files with their
records; it is removed when the output is complete. A rerun with the same input and settings (the plan's
fingerprint) reuses the plan and every segment whose record and checksum match; anything else is started over.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from vsnystra.cli import batch
from vsnystra.cli.media import EncodeSettings
from vsnystra.cli.segments import (
    DEFAULT_SCENE_THRESHOLD,
    DEFAULT_SEGMENT_FRAMES,
    PLAN_VERSION,
    FilePlan,
    Segment,
    Temporal,
    plan_segments,
)
from vsnystra.cli.worker import DEINTERLACE_MODES, TEMP_TAG, SegmentJob, field_pts, write_json_atomic

log = logging.getLogger(__name__)


@dataclass
class Options:
    out_dir: Path | None
    encode: EncodeSettings
    suffix: str = ".mkv"
    tag: str = ""
    overwrite: bool = False
    segment_frames: int = DEFAULT_SEGMENT_FRAMES
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD
    model_key: str = ""  # identifies the model and its settings in the plan's fingerprint
    progress: bool = True
    stream: TextIO | None = None
    subtitles: bool = True  # copy the subtitle streams (--no-subtitles: leave them out)
    strict: bool = False  # a damaged or truncated input fails instead of a warning
    deinterlace: str = ""  # "frame"/"field": bwdif before the model, for interlaced inputs (worker.deinterlaced)


@dataclass
class FileWork:
    """One input of the batch and the state of its segments."""

    src: Path
    final: Path
    label: str
    plan: FilePlan | None = None
    jobs: dict[int, SegmentJob] = field(default_factory=dict)
    pending: deque[SegmentJob] = field(default_factory=deque)
    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    running: dict[int, int] = field(default_factory=dict)  # segment -> frames written so far
    failed: bool = False
    reused: int = 0
    retried: int = 0
    scan_s: float = 0.0
    assemble_s: float = 0.0

    @property
    def workdir(self) -> Path:
        return self.final.parent / f".{self.final.name}.segments"


def fingerprint(src: Path, temporal: Temporal, opts: Options) -> str:
    """Identity of a plan: the input file's identity and every setting that changes the segments."""
    st = src.stat()
    key = {
        "version": PLAN_VERSION,
        "src": str(src.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "model": opts.model_key,
        "temporal": temporal,
        "encode": dataclasses.asdict(opts.encode),
        "segment_frames": opts.segment_frames,
        "scene_threshold": opts.scene_threshold,
        "deinterlace": opts.deinterlace,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def plan_file(f: FileWork, temporal: Temporal, opts: Options, check: Callable[[], None] | None = None) -> FilePlan:
    """The file's plan: the saved one if its fingerprint matches (temporary files of earlier runs removed), else a
    new one from a planning pass (``check`` is called once per decoded frame; it may raise to cancel)."""
    from vsnystra.cli.scan import scan

    batch.remove_stale_partials(f.final)
    key = fingerprint(f.src, temporal, opts)
    path = f.workdir / "plan.json"
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        plan = FilePlan.from_json(path.read_text())
        if plan.fingerprint == key:
            for p in f.workdir.glob(f"*{TEMP_TAG}*"):
                log.debug("removing the temporary file %s of an earlier run", p)
                p.unlink(missing_ok=True)
            return plan
        log.info("%s: the input or the settings changed since the last run; starting the file over", f.label)
    if f.workdir.exists():
        shutil.rmtree(f.workdir)
    t = time.monotonic()
    on_frame = (lambda _: check()) if check is not None else None
    s = scan(f.src, threshold=opts.scene_threshold, find_cuts=temporal is not None, on_frame=on_frame)
    f.scan_s = time.monotonic() - t
    mode = opts.deinterlace if s.interlaced else ""  # progressive inputs of the batch are left as they are
    per = DEINTERLACE_MODES.get(mode, 1)
    plan = FilePlan(
        fingerprint=key,
        source=str(f.src.resolve()),
        frames=s.frames * per,  # what the model sees and the output holds: the planner counts these
        temporal=temporal,
        segment_frames=opts.segment_frames,
        cuts=[c * per for c in s.cuts] if temporal is not None else [],
        decode_pts=s.decode_pts,
        out_pts=field_pts(s.out_pts, s.step, mode),
        checksums=s.checksums,
        seekable=s.seekable,
        expected=s.expected,
        decode_errors=s.decode_errors,
        exact=s.exact,
        deinterlace=mode,
        decoded=s.frames,
    )
    plan.segments = plan_segments(plan.frames, plan.cuts, temporal, opts.segment_frames)
    f.workdir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, json.loads(plan.to_json()))
    return plan


def decode_range(read: tuple[int, int], decoded: int, deinterlace: str) -> tuple[tuple[int, int], int]:
    """The decoded frames a read range of (deinterlaced) frames comes from, and how many bwdif outputs to drop
    before it. With bwdif one frame of context is decoded on each side (its output depends on the neighbours)."""
    if not deinterlace:
        return read, 0
    per = DEINTERLACE_MODES[deinterlace]
    ra, rb = read
    first, end = ra // per, -(-rb // per)
    a, b = max(0, first - 1), min(decoded, end + 1)
    return (a, b), ra - a * per


def make_job(f: FileWork, plan: FilePlan, seg: Segment, encode: EncodeSettings) -> SegmentJob:
    (wa, wb) = seg.write
    decoded = plan.frames if plan.decoded is None else plan.decoded
    (da, db), drop = decode_range(seg.read, decoded, plan.deinterlace)
    return SegmentJob(
        key=str(f.final),
        src=str(f.src.resolve()),
        workdir=str(f.workdir.resolve()),
        fingerprint=plan.fingerprint,
        segment=seg,
        decode_pts=tuple(plan.decode_pts[da:db]),
        checksums=tuple(plan.checksums[da:db]) if plan.checksums is not None else None,
        out_pts=tuple(plan.out_pts[wa:wb]),
        seek=plan.seekable,
        encode=encode,
        deinterlace=plan.deinterlace,
        decode=(da, db) if plan.deinterlace else None,
        drop=drop,
    )


def assemble_file(f: FileWork, check: Callable[[], None] | None = None, *, subtitles: bool = True) -> int:
    """Join all segments (records checked) into a temporary file, rename it into place; returns the frame count.
    The temporary file is removed on any failure or cancellation; the work folder is left to the caller."""
    from vsnystra.cli.assemble import assemble

    assert f.plan is not None
    tmp = batch.temp_path(f.final)
    jobs = [f.jobs[s.index] for s in f.plan.segments]
    records = [f.records[s.index] for s in f.plan.segments]
    t = time.monotonic()
    try:
        for job, rec in zip(jobs, records, strict=True):
            if job.path.stat().st_size != rec["size"]:
                raise RuntimeError(f"{job.path} changed size since it was written; rerun to restore it again")
        n = assemble(
            f.src,
            [j.path for j in jobs],
            records,
            tmp,
            batch._format_for(f.final),
            check,
            subtitles=subtitles,
            deinterlace=f.plan.deinterlace,
        )
        if n != f.plan.frames:
            raise RuntimeError(f"the joined output has {n} frames, the input {f.plan.frames}")
        batch._fsync(tmp)
        os.replace(tmp, f.final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    f.assemble_s = time.monotonic() - t
    return n
