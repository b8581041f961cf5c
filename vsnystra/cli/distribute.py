"""Segmented restore of video files: plan each file, restore its segments with an executor, assemble, rename.

The driver is the same for every executor. It plans a file when an executor asks for work and none is left
(so planning one file overlaps with restoring the previous ones), hands out segment jobs, takes back their
records, and assembles a file as soon as its last segment is in. Executors only run jobs: ``LocalExecutor`` in
this process with the model already loaded, ``ray_executor.RayExecutor`` on Ray actors. Both call
``worker.run_segment`` on the same jobs, so they write the same frames.

Work folder: ``<output folder>/.<output name>.segments/`` holds ``plan.json`` and the segment files with their
records; it is removed when the output is complete. A rerun with the same input and settings (the plan's
fingerprint) reuses the plan and every segment whose record and checksum match; anything else is started over.
One driver per output folder at a time: a new run deletes temporary files it finds in the work folders.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from vsnystra.cli import batch
from vsnystra.cli.media import EncodeSettings
from vsnystra.cli.progress import ProgressBar, _fmt_time
from vsnystra.cli.segments import PLAN_VERSION, FilePlan, Segment, Temporal, plan_segments
from vsnystra.cli.worker import TEMP_TAG, SegmentJob, read_record, run_segment, write_json_atomic

log = logging.getLogger(__name__)


class Executor(Protocol):
    def describe(self) -> tuple[str, Temporal]:
        """(architecture, temporal context) of the model the workers run: the planner needs them."""
        ...

    def run(self, driver: Driver) -> None:
        """Run ``driver.next()`` jobs until it returns None, reporting to ``driver.done/failed/progress``."""
        ...

    def close(self) -> None: ...


@dataclass
class Options:
    out_dir: Path | None
    encode: EncodeSettings
    suffix: str = ".mkv"
    tag: str = ""
    overwrite: bool = False
    segment_frames: int = 600
    scene_threshold: float = 0.1
    model_key: str = ""
    progress: bool = True
    stream: TextIO | None = None


@dataclass
class SegmentedSummary(batch.Summary):
    """The batch summary plus one line per file and per worker node."""

    details: list[str] = field(default_factory=list)

    def render(self) -> str:
        return "\n".join([super().render(), *self.details])

    def merge(self, other: batch.Summary) -> SegmentedSummary:
        self.done += other.done
        self.skipped += other.skipped
        self.failed += other.failed
        self.frames += other.frames
        self.seconds += other.seconds
        self.interrupted = self.interrupted or other.interrupted
        return self


@dataclass
class _File:
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

    @property
    def workdir(self) -> Path:
        return self.final.parent / f".{self.final.name}.segments"


@dataclass
class _Node:
    segments: int = 0
    frames: int = 0
    seconds: float = 0.0


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
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def make_job(f: _File, plan: FilePlan, seg: Segment, encode: EncodeSettings) -> SegmentJob:
    (ra, rb), (wa, wb) = seg.read, seg.write
    return SegmentJob(
        key=str(f.final),
        src=str(f.src.resolve()),
        workdir=str(f.workdir.resolve()),
        fingerprint=plan.fingerprint,
        segment=seg,
        decode_pts=tuple(plan.decode_pts[ra:rb]),
        checksums=tuple(plan.checksums[ra:rb]) if plan.checksums is not None else None,
        out_pts=tuple(plan.out_pts[wa:wb]),
        seek=plan.seekable,
        encode=encode,
    )


class _Cancelled(Exception):
    pass


class _PlanAhead:
    """Plans one file in a daemon thread (decoding releases the GIL) while the executor restores the others."""

    def __init__(self, plan: Callable[[_File, Callable[[int], None]], FilePlan]) -> None:
        self._plan = plan
        self._stop = threading.Event()
        self.file: _File | None = None
        self._thread: threading.Thread | None = None
        self._result: tuple[FilePlan | None, BaseException | None] = (None, None)

    def start(self, f: _File) -> None:
        self.file = f

        def work() -> None:
            try:
                self._result = (self._plan(f, self._check), None)
            except BaseException as e:  # handed to take(), raised there
                self._result = (None, e)

        self._thread = threading.Thread(target=work, name="vsnystra-plan", daemon=True)
        self._thread.start()

    def _check(self, _: int) -> None:
        if self._stop.is_set():
            raise _Cancelled

    def take(self) -> FilePlan:
        assert self._thread is not None
        while self._thread.is_alive():
            self._thread.join(timeout=0.1)  # short waits: Ctrl-C stays responsive
        self.file = None
        plan, error = self._result
        if error is not None:
            raise error
        assert plan is not None
        return plan

    def cancel(self) -> None:
        self._stop.set()


class Driver:
    """Plans, hands out jobs, collects records, assembles; see the module docstring."""

    def __init__(self, inputs: Sequence[Path], executor: Executor, opts: Options) -> None:
        self.inputs = list(inputs)
        self.executor = executor
        self.opts = opts
        self.summary = SegmentedSummary()
        self.files: dict[str, _File] = {}
        self.queue: deque[_File] = deque()
        self.active: list[_File] = []
        self.nodes: dict[str, _Node] = {}
        self.temporal: Temporal = None
        self.arch = ""
        self.bar: ProgressBar | None = None
        self.frames_done = 0
        self.frames_total = 0
        self.ahead = _PlanAhead(self._plan)

    # ------------------------------------------------------------------ the batch
    def run(self) -> SegmentedSummary:
        start = time.monotonic()
        try:
            self._check_inputs()
            if self.queue:
                self.arch, self.temporal = self.executor.describe()
                self.executor.run(self)
                for f in list(self.active):  # an executor must not stop early; if it did, say so
                    self._fail(f, "the executor stopped before every segment was restored; rerun to resume")
        except KeyboardInterrupt:
            self.summary.interrupted = True
        except Exception as e:  # the executor gave up (e.g. no Ray worker left): report, a rerun resumes
            reason = f"{type(e).__name__}: {e}"
            log.error("restore stopped: %s", reason)
            for f in [*self.active, *self.queue]:
                if not f.failed:
                    self.summary.failed.append((f.src, reason))
        finally:
            self.ahead.cancel()
            if self.bar is not None:
                self.bar.close()
            self.summary.seconds = time.monotonic() - start
            self._details()
        return self.summary

    def _check_inputs(self) -> None:
        opts = self.opts
        if opts.out_dir is not None:
            opts.out_dir.mkdir(parents=True, exist_ok=True)
        seen: set[Path] = set()
        for i, src in enumerate(self.inputs, 1):
            final = batch.output_path(src, opts.out_dir, opts.suffix, opts.tag)
            label = f"[{i}/{len(self.inputs)}] {src.name}"
            if final.resolve() == src.resolve():
                self.summary.failed.append((src, f"output would overwrite the input; use -o DIR or --tag ({final})"))
                log.error("%s: output would overwrite the input", label)
            elif final in seen:
                self.summary.failed.append((src, f"another input already writes {final}; rename one of them"))
            elif final.exists() and not opts.overwrite:
                log.info("%s: skipped, %s exists", label, final)
                self.summary.skipped.append(src)
            elif not src.is_file():
                self.summary.failed.append((src, "no such file"))
                log.error("%s: no such file", label)
            else:
                f = _File(src, final, label)
                self.files[str(final)] = f
                self.queue.append(f)
            seen.add(final)

    # ------------------------------------------------------------------ executor interface
    def next(self) -> SegmentJob | None:
        """The next job to run; plans the next file when the planned ones have none left. None: all handed out."""
        while True:
            for f in self.active:
                if f.pending and not f.failed:
                    return f.pending.popleft()
            if not self.queue:
                return None
            self._open(self.queue.popleft())

    def has_work(self) -> bool:
        """Jobs left to hand out (including files not planned yet)."""
        return bool(self.queue) or any(f.pending and not f.failed for f in self.active)

    def requeue(self, job: SegmentJob) -> None:
        """A job whose worker was lost: run it again (before the file's other pending jobs)."""
        f = self.files[job.key]
        f.retried += 1
        f.running.pop(job.segment.index, None)
        if not f.failed:
            f.pending.appendleft(dataclasses.replace(job, attempt=job.attempt + 1))
            log.warning("%s: segment %d lost with its worker; retrying it", f.label, job.segment.index)
        self._draw()

    def progress(self, job: SegmentJob, frames: int) -> None:
        f = self.files[job.key]
        if not f.failed and job.segment.index not in f.records:
            f.running[job.segment.index] = frames
            self._draw()

    def done(self, job: SegmentJob, record: dict[str, Any]) -> None:
        f = self.files[job.key]
        f.running.pop(job.segment.index, None)
        if f.failed or job.segment.index in f.records:
            return
        f.records[job.segment.index] = record
        self.frames_done += job.segment.frames
        node = self.nodes.setdefault(str(record.get("node", "?")), _Node())
        node.segments += 1
        node.frames += job.segment.frames
        node.seconds += float(record.get("seconds", 0.0))
        self._draw()
        if f.plan is not None and len(f.records) == len(f.plan.segments):
            self._finish(f)

    def failed(self, job: SegmentJob, reason: str) -> None:
        self._fail(self.files[job.key], reason)

    def _fail(self, f: _File, reason: str) -> None:
        if f.failed:
            return
        f.failed = True
        self.summary.failed.append((f.src, reason))
        log.error("%s: failed: %s", f.label, reason)
        self._retire(f, keep=bool(f.records))

    # ------------------------------------------------------------------ one file
    def _open(self, f: _File) -> None:
        """Plan ``f`` (or reuse its plan) and queue the segments that are not done yet."""
        try:
            plan = self.ahead.take() if self.ahead.file is f else self._plan(f, None)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # a bad input must not stop the batch
            reason = f"{type(e).__name__}: {e}"
            self.summary.failed.append((f.src, reason))
            log.error("%s: failed: %s", f.label, reason)
            log.debug("traceback", exc_info=True)
            return
        finally:
            if self.queue and self.ahead.file is None:  # plan the next file while this one is restored
                self.ahead.start(self.queue[0])
        f.plan = plan
        for seg in plan.segments:
            job = make_job(f, plan, seg, self.opts.encode)
            f.jobs[seg.index] = job
            record = read_record(job)
            if record is not None:
                f.records[seg.index] = record
                f.reused += 1
            else:
                f.pending.append(job)
        pending_frames = sum(j.segment.frames for j in f.pending)
        log.info(
            "%s: %d frames, %d shots, %d segments (%d done before)",
            f.label,
            plan.frames,
            len(plan.cuts) + 1,
            len(plan.segments),
            f.reused,
        )
        if not f.pending:
            self._finish(f)
            return
        self.active.append(f)
        self.frames_total += pending_frames
        if self.opts.progress:
            if self.bar is None:
                self.bar = ProgressBar(f.label, self.frames_total, stream=self.opts.stream)
            self.bar.label = f.label
        self._draw()

    def _plan(self, f: _File, on_frame: Callable[[int], None] | None) -> FilePlan:
        from vsnystra.cli.scan import scan

        batch.remove_stale_partials(f.final)
        key = fingerprint(f.src, self.temporal, self.opts)
        path = f.workdir / "plan.json"
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            plan = FilePlan.from_json(path.read_text())
            if plan.fingerprint == key:
                self._remove_temporaries(f.workdir)
                return plan
            log.info("%s: the input or the settings changed since the last run; starting the file over", f.label)
        if f.workdir.exists():
            shutil.rmtree(f.workdir)
        t = time.monotonic()
        s = scan(f.src, threshold=self.opts.scene_threshold, find_cuts=self.temporal is not None, on_frame=on_frame)
        f.scan_s = time.monotonic() - t
        plan = FilePlan(
            fingerprint=key,
            source=str(f.src.resolve()),
            frames=s.frames,
            temporal=self.temporal,
            segment_frames=self.opts.segment_frames,
            cuts=s.cuts if self.temporal is not None else [],
            decode_pts=s.decode_pts,
            out_pts=s.out_pts,
            checksums=s.checksums,
            seekable=s.seekable,
        )
        plan.segments = plan_segments(plan.frames, plan.cuts, self.temporal, self.opts.segment_frames)
        f.workdir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, json.loads(plan.to_json()))
        return plan

    @staticmethod
    def _remove_temporaries(workdir: Path) -> None:
        for p in workdir.glob(f"*{TEMP_TAG}*"):
            log.debug("removing the temporary file %s of an earlier run", p)
            p.unlink(missing_ok=True)

    def _finish(self, f: _File) -> None:
        """Assemble the output from all segments (records checked), rename it into place, drop the work folder."""
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
            n = assemble(f.src, [j.path for j in jobs], records, tmp, batch._format_for(f.final))
            if n != f.plan.frames:
                raise RuntimeError(f"the joined output has {n} frames, the input {f.plan.frames}")
            batch._fsync(tmp)
            os.replace(tmp, f.final)
        except KeyboardInterrupt:
            tmp.unlink(missing_ok=True)
            raise
        except Exception as e:
            tmp.unlink(missing_ok=True)
            self._fail(f, f"{type(e).__name__}: {e}")
            log.debug("traceback", exc_info=True)
            return
        self.summary.done.append(f.src)
        self.summary.frames += n
        log.info(
            "%s: wrote %s (%d frames; %d segments: %d restored, %d reused, %d retried; assembly %.1f s)",
            f.label,
            f.final,
            n,
            len(f.plan.segments),
            len(f.plan.segments) - f.reused,
            f.reused,
            f.retried,
            time.monotonic() - t,
        )
        self._retire(f, keep=False)

    def _retire(self, f: _File, *, keep: bool) -> None:
        if f in self.active:
            self.active.remove(f)
        f.pending.clear()
        if not keep:
            shutil.rmtree(f.workdir, ignore_errors=True)

    # ------------------------------------------------------------------ reporting
    def _draw(self) -> None:
        if self.bar is not None:
            running = sum(sum(f.running.values()) for f in self.active)
            self.bar.set(self.frames_done + running, self.frames_total)

    def _details(self) -> None:
        for f in self.files.values():
            if f.plan is not None:
                self.summary.details.append(
                    f"  {f.src.name}: {f.plan.frames} frames, {len(f.plan.segments)} segments "
                    f"({len(f.plan.segments) - f.reused - len(f.pending)} restored, {f.reused} reused, "
                    f"{f.retried} retried), scan {_fmt_time(f.scan_s)}"
                )
        for name, n in sorted(self.nodes.items()):
            fps = n.frames / n.seconds if n.seconds > 0 else 0.0
            self.summary.details.append(
                f"  node {name}: {n.segments} segments, {n.frames} frames, busy {_fmt_time(n.seconds)} ({fps:.2f} fps)"
            )


class NoModel:
    """The executor when no output needs restoring (all exist): the driver only reports them skipped."""

    def describe(self) -> tuple[str, Temporal]:
        raise RuntimeError("vsnystra restore: no model was loaded for outputs that need restoring")

    def run(self, driver: Driver) -> None:
        raise RuntimeError("vsnystra restore: no model was loaded for outputs that need restoring")

    def close(self) -> None:
        return None


class LocalExecutor:
    """Runs the jobs one after the other in this process with a model loaded here."""

    def __init__(self, loaded: Any) -> None:
        self.loaded = loaded  # cli.model.LoadedModel (not imported here: that imports torch)

    def describe(self) -> tuple[str, Temporal]:
        return str(self.loaded.arch), self.loaded.temporal

    def run(self, driver: Driver) -> None:
        while (job := driver.next()) is not None:
            try:
                record = run_segment(job, self.loaded.restorer, on_frame=functools.partial(driver.progress, job))
            except KeyboardInterrupt:
                raise
            except Exception as e:  # this file fails, the batch goes on
                log.debug("traceback", exc_info=True)
                driver.failed(job, f"{type(e).__name__}: {e}")
                continue
            driver.done(job, record)

    def close(self) -> None:
        return None


def restore_files(inputs: Sequence[Path], executor: Executor, opts: Options) -> SegmentedSummary:
    """Restore video files with ``executor``; returns the summary (``interrupted`` set on Ctrl-C/SIGTERM)."""
    try:
        return Driver(inputs, executor, opts).run()
    finally:
        executor.close()
