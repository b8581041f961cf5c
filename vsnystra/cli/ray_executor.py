"""Run segment jobs on a Ray cluster: one actor per GPU (``num_gpus=1``), or CPU actors of ``--threads`` threads.

Each actor loads the model once and restores one segment at a time with ``worker.run_segment``, the code the
in-process executor runs, reading the input and writing into the output folder (which every node must see under
the same path). Fault tolerance is the driver's: actors restart after a crash (``max_restarts=-1``), and a job
whose actor or node was lost goes back to the queue and runs again, up to ``max_attempts`` times; a job that
fails with an ordinary error (a bad input) fails its file only. Segments are committed by their record
(``worker.run_segment``), so a lost worker leaves nothing that is used, and progress is polled from the actors
(``max_concurrency=2``: ``progress`` answers while ``restore`` runs).

Addresses: ``auto`` (a cluster started with ``ray start`` on this machine, or $RAY_ADDRESS), ``HOST:PORT`` (a
head node), ``local`` / ``local:N`` (a throw-away cluster on this machine with N CPUs, default all, bound to the
loopback address; it is stopped at the end). If this process is already connected to Ray, that connection is
used and left open.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vsnystra.cli.segments import Temporal
from vsnystra.cli.worker import SegmentJob, run_segment

if TYPE_CHECKING:
    from vsnystra.cli.distribute import Driver
    from vsnystra.cli.model import LoadedModel
    from vsnystra.runtime.settings import Options

log = logging.getLogger(__name__)

MISSING_RAY = "vsnystra restore: --ray needs the ray package; install it with pip install 'vsnystra[ray]'"
MAX_ATTEMPTS = 3
STALL_TIMEOUT = 600.0  # seconds without any live worker before the driver gives up (a rerun resumes)
POLL = 1.0


class ClusterError(RuntimeError):
    """Ray is missing, the cluster cannot be reached, or no worker could load the model."""


class SegmentWorker:
    """The actor: one loaded model, one segment at a time."""

    def __init__(self, factory: Callable[[], LoadedModel], threads: int | None) -> None:
        import ray
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.loaded = factory()
        self.frames = 0
        node_id = ray.get_runtime_context().get_node_id()
        self.node = f"{socket.gethostname()}/{ray.util.get_node_ip_address()}/{node_id[:6]}"

    def describe(self) -> dict[str, Any]:
        return {"arch": self.loaded.arch, "temporal": self.loaded.temporal, "node": self.node, "pid": os.getpid()}

    def restore(self, job: SegmentJob) -> dict[str, Any]:
        self.frames = 0
        return run_segment(job, self.loaded.restorer, on_frame=self._count, node=self.node)

    def _count(self, n: int) -> None:
        self.frames = n

    def progress(self) -> int:
        return self.frames


def _import_ray(local: bool) -> Any:
    if local:  # a throw-away cluster stays on the loopback address and reports nothing anywhere
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ClusterError(MISSING_RAY) from None
    return ray


def connect(
    address: str,
    model: Options | Callable[[], LoadedModel],
    *,
    threads: int | None = None,
    max_attempts: int = MAX_ATTEMPTS,
    stall_timeout: float = STALL_TIMEOUT,
) -> RayExecutor:
    """Connect to (or start) the cluster at ``address`` and start the workers; see the module docstring."""
    kind, _, count = address.partition(":")
    local = kind == "local"
    ray = _import_ray(local)
    owns = False
    if not ray.is_initialized():
        try:
            if local:
                cpus = int(count) if count else os.cpu_count() or 1
                if cpus < 1:
                    raise ValueError
                ray.init(
                    address="local",  # always a new cluster, never one found running on this machine
                    num_cpus=cpus,
                    include_dashboard=False,
                    _node_ip_address="127.0.0.1",
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                )
            else:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except ValueError as e:
            if local and not str(e):
                raise ClusterError(f"vsnystra restore: --ray local:N needs a positive N, got {address!r}") from None
            raise ClusterError(f"vsnystra restore: cannot connect to the Ray cluster at {address!r}: {e}") from None
        except (ConnectionError, RuntimeError) as e:
            raise ClusterError(f"vsnystra restore: cannot connect to the Ray cluster at {address!r}: {e}") from None
        owns = True
    if callable(model):
        factory: Callable[[], LoadedModel] = model
    else:
        from vsnystra.cli.model import load

        factory = functools.partial(load, model)
    resources = ray.cluster_resources()
    gpus, cluster_cpus = int(resources.get("GPU", 0)), float(resources.get("CPU", 0))
    options: dict[str, Any] = {"max_restarts": -1, "max_task_retries": 0, "max_concurrency": 2}
    if gpus:
        count_actors = gpus
        options.update(num_gpus=1, num_cpus=1)
    else:
        threads = threads or 1
        count_actors = max(1, int(cluster_cpus // threads))
        options.update(num_cpus=threads)
    log.info(
        "Ray: %d workers (%s) on %d nodes",
        count_actors,
        "1 GPU each" if gpus else f"{threads} CPU threads each",
        len([n for n in ray.nodes() if n.get("Alive")]),
    )
    remote = ray.remote(SegmentWorker)
    actors = [remote.options(**options).remote(factory, threads) for _ in range(count_actors)]
    return RayExecutor(ray, actors, owns, max_attempts=max_attempts, stall_timeout=stall_timeout)


@dataclass
class _Pool:
    idle: list[Any] = field(default_factory=list)
    busy: dict[Any, tuple[Any, SegmentJob]] = field(default_factory=dict)  # ref -> (actor, job)
    pings: dict[Any, Any] = field(default_factory=dict)  # ref -> actor waiting to be (back) up
    later: list[tuple[float, Any]] = field(default_factory=list)  # (when, actor) to ping again


class RayExecutor:
    """The executor on Ray actors; see the module docstring."""

    def __init__(
        self, ray: Any, actors: list[Any], owns: bool, *, max_attempts: int, stall_timeout: float, poll: float = POLL
    ) -> None:
        self.ray = ray
        self.actors = actors
        self.owns = owns
        self.max_attempts = max_attempts
        self.stall_timeout = stall_timeout
        self.poll = poll
        self.pool = _Pool()
        self.lost = 0  # jobs whose worker was lost
        self.model: tuple[str, Temporal] | None = None

    def describe(self) -> tuple[str, Temporal]:
        """Ask the first worker that comes up; the others join the pool as they come up."""
        if self.model is not None:
            return self.model
        pings = {a.describe.remote(): a for a in self.actors}
        deadline = time.monotonic() + self.stall_timeout
        while pings:
            ready, _ = self.ray.wait(list(pings), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                raise ClusterError(
                    f"vsnystra restore: no Ray worker started within {self.stall_timeout:.0f} s; "
                    "does the cluster have a free CPU (or GPU)?"
                )
            actor = pings.pop(ready[0])
            try:
                info = self.ray.get(ready[0])
            except self.ray.exceptions.RayError as e:
                if pings:
                    continue
                raise ClusterError(f"vsnystra restore: no Ray worker could load the model: {_reason(e)}") from None
            self.pool.idle.append(actor)
            self.pool.pings.update(pings)
            temporal = tuple(info["temporal"]) if info["temporal"] is not None else None
            self.model = str(info["arch"]), temporal  # type: ignore[assignment]
            return self.model
        raise ClusterError("vsnystra restore: no Ray worker")

    def wait_ready(self, timeout: float) -> int:
        """Wait until every worker is up (or ``timeout`` s); returns how many are ready. Benchmarks and tests use
        it to keep start-up out of timings; ``run`` does not need it (workers join as they come up)."""
        self.describe()
        deadline = time.monotonic() + timeout
        while self.pool.pings and time.monotonic() < deadline:
            ready, _ = self.ray.wait(list(self.pool.pings), num_returns=1, timeout=deadline - time.monotonic())
            for ref in ready:
                self._pinged(ref)
        return len(self.pool.idle)

    def run(self, driver: Driver) -> None:
        ray, pool = self.ray, self.pool
        stalled_since: float | None = None
        last_poll = time.monotonic()
        while True:
            while pool.idle and (job := driver.next()) is not None:
                actor = pool.idle.pop()
                pool.busy[actor.restore.remote(job)] = (actor, job)
            if not pool.busy and not driver.has_work():
                return
            now = time.monotonic()
            for when, actor in [x for x in pool.later if x[0] <= now]:
                pool.later.remove((when, actor))
                pool.pings[actor.describe.remote()] = actor
            if pool.busy or pool.idle:
                stalled_since = None
            elif stalled_since is None:
                stalled_since = now
            elif now - stalled_since > self.stall_timeout:
                raise ClusterError(
                    f"no Ray worker has been available for {self.stall_timeout:.0f} s; finished segments are kept, "
                    "rerun to resume"
                )
            refs = [*pool.busy, *pool.pings]
            ready, _ = ray.wait(refs, num_returns=1, timeout=self.poll) if refs else ([], [])
            if not refs:
                time.sleep(self.poll)
            for ref in ready:
                if ref in pool.busy:
                    self._finished(ref, driver)
                else:
                    self._pinged(ref)
            if time.monotonic() - last_poll >= self.poll:
                last_poll = time.monotonic()
                self._poll_progress(driver)

    def _finished(self, ref: Any, driver: Driver) -> None:
        ray, pool = self.ray, self.pool
        actor, job = pool.busy.pop(ref)
        try:
            record = ray.get(ref)
        except ray.exceptions.RayTaskError as e:  # the job itself failed: its file fails, the worker is fine
            pool.idle.append(actor)
            driver.failed(job, _reason(e))
            return
        except ray.exceptions.RayError as e:  # the worker or its node was lost
            self.lost += 1
            log.debug("segment %d: worker lost: %s", job.segment.index, e)
            pool.later.append((time.monotonic() + self.poll, actor))
            if job.attempt >= self.max_attempts:
                driver.failed(job, f"segment {job.segment.index} lost its worker {job.attempt} times: {_reason(e)}")
            else:
                driver.requeue(job)
            return
        pool.idle.append(actor)
        driver.done(job, record)

    def _pinged(self, ref: Any) -> None:
        ray, pool = self.ray, self.pool
        actor = pool.pings.pop(ref)
        try:
            ray.get(ref)
        except ray.exceptions.RayError:  # restarting (or its node is gone): ask again later
            pool.later.append((time.monotonic() + self.poll, actor))
            return
        pool.idle.append(actor)

    def _poll_progress(self, driver: Driver) -> None:
        ray = self.ray
        asks = {actor.progress.remote(): job for actor, job in self.pool.busy.values()}
        if not asks:
            return
        ready, _ = ray.wait(list(asks), num_returns=len(asks), timeout=self.poll)
        for ref in ready:
            try:
                driver.progress(asks[ref], int(ray.get(ref)))
            except ray.exceptions.RayError:
                continue

    def close(self) -> None:
        ray = self.ray
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already gone
                log.debug("could not kill a Ray actor", exc_info=True)
        if self.owns and ray.is_initialized():
            ray.shutdown()


def _reason(e: BaseException) -> str:
    """The last line of a Ray error (the worker's own exception), not Ray's whole traceback."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException) and not isinstance(cause, type(e)):
        return f"{type(cause).__name__}: {cause}"
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__
