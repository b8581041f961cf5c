"""One function run in a daemon thread, cancellable: the driver plans the next file and assembles finished ones
this way while the executor keeps the workers busy (decoding and muxing release the GIL).

Why daemon threads with a cancel flag rather than a thread pool: pool threads are joined at interpreter exit, so
a Ctrl-C would wait for a long planning pass; here the function polls ``check()`` and stops within a frame.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Cancelled(Exception):
    """Raised by ``check()`` inside a cancelled task."""


class Task[T]:
    """``fn(check)`` in a daemon thread; ``result()`` waits for it and returns its value or raises its error."""

    def __init__(self, name: str, fn: Callable[[Callable[[], None]], T]) -> None:
        self._stop = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None

        def work() -> None:
            try:
                self._value = fn(self.check)
            except BaseException as e:  # handed to result(), raised there
                self._error = e

        self._thread = threading.Thread(target=work, name=name, daemon=True)
        self._thread.start()

    def check(self) -> None:
        if self._stop.is_set():
            raise Cancelled

    def done(self) -> bool:
        return not self._thread.is_alive()

    def result(self) -> T:
        while self._thread.is_alive():
            self._thread.join(timeout=0.1)  # short waits: Ctrl-C stays responsive in the caller
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    def cancel(self, wait: float = 0.0) -> None:
        """Ask the task to stop; wait up to ``wait`` seconds for it (so it can remove its temporary files)."""
        self._stop.set()
        self._thread.join(timeout=wait)
