"""Segmented restore of video files: plan each file, restore its segments with an executor, assemble, rename.

The driver is the same for every executor. Executors only run jobs: ``local_executor.LocalExecutor`` in this
process with the model already loaded, ``ray_executor.RayExecutor`` on Ray actors; both call
``worker.run_segment`` on the same jobs, so they write the same frames. The driver hands out the jobs of the
files planned so far, plans the next file in a background thread while they run (so a long planning pass does not
idle the workers), and assembles a file in a background thread as soon as its last segment is in. A driver
claims each output (``outlock.OutputLock``) before it plans it or deletes the temporary files of its work folder;
an output another running ``vsnystra restore`` holds is skipped with a line saying so.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vsnystra.cli import batch
from vsnystra.cli.background import Cancelled, Task
from vsnystra.cli.filework import FileWork, Options, assemble_file, make_job, plan_file
from vsnystra.cli.outlock import OutputLock
from vsnystra.cli.progress import ProgressBar, _fmt_time
from vsnystra.cli.segments import FilePlan, Temporal
from vsnystra.cli.worker import SegmentJob, read_record

log = logging.getLogger(__name__)

__all__ = ["Driver", "Executor", "Options", "SegmentedSummary", "restore_files"]


class Executor(Protocol):
    def describe(self) -> tuple[str, Temporal]:
        """(architecture, temporal context) of the model the workers run: the planner needs them."""
        ...

    def run(self, driver: Driver) -> None:
        """Run jobs from ``driver.next()`` while ``driver.has_work()``, reporting to ``driver.done/failed/...``."""
        ...

    def close(self) -> None: ...


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
        self.warnings += other.warnings
        self.frames += other.frames
        self.seconds += other.seconds
        self.interrupted = self.interrupted or other.interrupted
        return self


@dataclass
class _Node:
    segments: int = 0
    frames: int = 0
    seconds: float = 0.0


class Driver:
    """Plans, hands out jobs, collects records, assembles; see the module docstring."""

    def __init__(self, inputs: Sequence[Path], executor: Executor, opts: Options) -> None:
        self.inputs = list(inputs)
        self.executor = executor
        self.opts = opts
        self.summary = SegmentedSummary()
        self.files: dict[str, FileWork] = {}
        self.queue: deque[FileWork] = deque()
        self.active: list[FileWork] = []
        self.nodes: dict[str, _Node] = {}
        self.temporal: Temporal = None
        self.bar: ProgressBar | None = None
        self.frames_done = 0
        self.frames_total = 0
        self.planning: tuple[FileWork, Task[FilePlan]] | None = None
        self.assembling: list[tuple[FileWork, Task[int]]] = []
        self.locks: dict[str, OutputLock] = {}  # outputs this driver has claimed, by key

    # ------------------------------------------------------------------ the batch
    def run(self) -> SegmentedSummary:
        start = time.monotonic()
        try:
            self._check_inputs()
            if self.queue:
                _, self.temporal = self.executor.describe()
                self.executor.run(self)
                for f in list(self.active):  # an executor must not stop early; if it did, say so
                    self._fail(f, "the executor stopped before every segment was restored; rerun to resume")
                self._collect(wait=True)
        except KeyboardInterrupt:
            self.summary.interrupted = True
        except Exception as e:  # the executor gave up (e.g. no Ray worker left): report, a rerun resumes
            reason = f"{type(e).__name__}: {e}"
            log.error("restore stopped: %s", reason)
            for f in [*self.active, *self.queue]:
                self._fail(f, reason)
            self._collect(wait=True)  # outputs whose segments were all in are still written
        finally:
            self._stop_background()
            for lock in self.locks.values():
                lock.release()
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
                f = FileWork(src, final, label)
                self.files[str(final)] = f
                self.queue.append(f)
            seen.add(final)

    # ------------------------------------------------------------------ executor interface
    def next(self) -> SegmentJob | None:
        """The next job to run; plans the next file when the planned ones have none left. None: nothing left."""
        self._collect(wait=False)
        while True:
            for f in self.active:
                if f.pending and not f.failed:
                    return f.pending.popleft()
            if self._claim_head() is None:
                return None
            self._open(self.queue.popleft())

    def _claim_head(self) -> FileWork | None:
        """The first queued file, claimed for this process; files another process writes (or has written meanwhile)
        are taken off the queue as skipped."""
        while self.queue:
            f = self.queue[0]
            key = str(f.final)
            if key in self.locks:
                return f
            lock = OutputLock(f.final)
            if not lock.acquire():
                self.queue.popleft()
                log.warning("%s: skipped, %s is writing %s", f.label, lock.describe_holder(), f.final)
                self.summary.skipped.append(f.src)
                continue
            if f.final.exists() and not self.opts.overwrite:  # finished by another process since the batch began
                lock.release()
                self.queue.popleft()
                log.info("%s: skipped, %s exists", f.label, f.final)
                self.summary.skipped.append(f.src)
                continue
            self.locks[key] = lock
            return f
        return None

    def _release(self, f: FileWork) -> None:
        lock = self.locks.pop(str(f.final), None)
        if lock is not None:
            lock.release()

    def has_work(self) -> bool:
        """Jobs left to hand out (including files not planned yet)."""
        return bool(self.queue) or any(f.pending and not f.failed for f in self.active)

    def requeue(self, job: SegmentJob) -> None:
        """A job whose worker was lost: run it again (before the file's other pending jobs)."""
        f = self.files[job.key]
        f.retried += 1
        f.running.pop(job.segment.index, None)
        if not f.failed:
            f.pending.appendleft(job.retry())
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
        self._collect(wait=False)

    def failed(self, job: SegmentJob, reason: str) -> None:
        self._fail(self.files[job.key], reason)

    # ------------------------------------------------------------------ one file
    def _open(self, f: FileWork) -> None:
        """Plan ``f`` (or take its plan from the background) and queue the segments that are not done yet."""
        try:
            if self.planning is not None and self.planning[0] is f:
                plan = self.planning[1].result()
                self.planning = None
            else:
                plan = plan_file(f, self.temporal, self.opts)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # a bad input must not stop the batch
            self._fail(f, f"{type(e).__name__}: {e}")
            log.debug("traceback", exc_info=True)
            return
        finally:
            nxt_claimed = self._claim_head() if self.planning is None else None
            if nxt_claimed is not None:  # plan the next file while this one is restored
                nxt = nxt_claimed
                self.planning = (
                    nxt,
                    Task("vsnystra-plan", lambda check: plan_file(nxt, self.temporal, self.opts, check)),
                )
        damage = plan.damage()
        if damage is not None:
            if self.opts.strict:
                self._fail(f, f"{damage}; --strict")
                return
            log.warning("%s: %s; restoring the frames that decode", f.label, damage)
            self.summary.warnings.append((f.src, damage))
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
        if plan.deinterlace:
            log.info(
                "%s: %d decoded frames deinterlaced (bwdif) into %d, one frame per %s",
                *(f.label, plan.decoded, plan.frames, plan.deinterlace),
            )
        log.info(
            "%s: %d frames, %d shots, %d segments (%d done before)",
            f.label,
            plan.frames,
            len(plan.cuts) + 1,
            len(plan.segments),
            f.reused,
        )
        self.active.append(f)
        if not f.pending:
            self._finish(f)
            return
        self.frames_total += sum(j.segment.frames for j in f.pending)
        if self.opts.progress:
            if self.bar is None:
                self.bar = ProgressBar(f.label, self.frames_total, stream=self.opts.stream)
            self.bar.label = f.label
        self._draw()

    def _finish(self, f: FileWork) -> None:
        """All segments are in: assemble in the background (the workers go on with other files meanwhile)."""
        self.active.remove(f)
        self.assembling.append(
            (
                f,
                Task(
                    "vsnystra-assemble",
                    lambda check: assemble_file(f, check, subtitles=self.opts.subtitles),
                ),
            )
        )

    def _collect(self, *, wait: bool) -> None:
        """Account for the assemblies that ended (all of them with ``wait``)."""
        for f, task in list(self.assembling):
            if not (wait or task.done()):
                continue
            self.assembling.remove((f, task))
            try:
                n = task.result()
            except (KeyboardInterrupt, Cancelled):
                raise KeyboardInterrupt from None
            except Exception as e:
                self._fail(f, f"{type(e).__name__}: {e}")
                continue
            assert f.plan is not None
            self.summary.done.append(f.src)
            self.summary.frames += n
            segs = len(f.plan.segments)
            log.info(
                "%s: wrote %s (%d frames; %d segments: %d restored, %d reused, %d retried; assembly %.1f s)",
                *(f.label, f.final, n, segs, segs - f.reused, f.reused, f.retried, f.assemble_s),
            )
            shutil.rmtree(f.workdir, ignore_errors=True)
            self._release(f)

    def _fail(self, f: FileWork, reason: str) -> None:
        if f.failed:
            return
        f.failed = True
        self.summary.failed.append((f.src, reason))
        log.error("%s: failed: %s", f.label, reason)
        if f in self.active:
            self.active.remove(f)
        f.pending.clear()
        if not f.records and str(f.final) in self.locks:  # nothing worth resuming (and the work folder is ours)
            shutil.rmtree(f.workdir, ignore_errors=True)
        if not any(t[0] is f for t in self.assembling):
            self._release(f)

    def _stop_background(self) -> None:
        """Cancel planning and assembly still running (an interrupt, an error); their temporary files go."""
        if self.planning is not None:
            self.planning[1].cancel()
        for _, task in self.assembling:
            task.cancel(wait=30.0)

    # ------------------------------------------------------------------ reporting
    def _draw(self) -> None:
        if self.bar is not None:
            running = sum(sum(f.running.values()) for f in self.active)
            self.bar.set(self.frames_done + running, self.frames_total)

    def _details(self) -> None:
        for f in self.files.values():
            if f.plan is not None:
                segs = len(f.plan.segments)
                self.summary.details.append(
                    f"  {f.src.name}: {f.plan.frames} frames, {segs} segments ({segs - f.reused - len(f.pending)} "
                    f"restored, {f.reused} reused, {f.retried} retried), planning {_fmt_time(f.scan_s)}, "
                    f"assembly {_fmt_time(f.assemble_s)}"
                )
        for name, n in sorted(self.nodes.items()):
            fps = n.frames / n.seconds if n.seconds > 0 else 0.0
            self.summary.details.append(
                f"  node {name}: {n.segments} segments, {n.frames} frames, busy {_fmt_time(n.seconds)} ({fps:.2f} fps)"
            )


def restore_files(inputs: Sequence[Path], executor: Executor, opts: Options) -> SegmentedSummary:
    """Restore video files with ``executor``; returns the summary (``interrupted`` set on Ctrl-C/SIGTERM)."""
    try:
        return Driver(inputs, executor, opts).run()
    finally:
        executor.close()
