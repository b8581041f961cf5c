"""The in-process executor of ``vsnystra restore``: the jobs one after the other, with the model loaded here."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from vsnystra.cli.segments import Temporal
from vsnystra.cli.worker import run_segment

if TYPE_CHECKING:
    from vsnystra.cli.distribute import Driver

log = logging.getLogger(__name__)


class LocalExecutor:
    """``worker.run_segment`` on every job in this process: what a Ray actor does, without Ray."""

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


class NoModel:
    """The executor when no output needs restoring (all exist): the driver only reports them skipped."""

    def describe(self) -> tuple[str, Temporal]:
        raise RuntimeError("vsnystra restore: no model was loaded for outputs that need restoring")

    def run(self, driver: Driver) -> None:
        raise RuntimeError("vsnystra restore: no model was loaded for outputs that need restoring")

    def close(self) -> None:
        return None
