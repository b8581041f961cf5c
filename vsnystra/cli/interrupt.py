"""Stop requests from signals that cannot get lost.

Why: a signal handler's KeyboardInterrupt is raised wherever the main thread happens to be. Inside a weakref
callback or a ``__del__`` Python only prints "Exception ignored" and carries on, so a SIGTERM'd batch went on
encoding (seen once in ~15 killed runs under load). The handler also sets a flag, and the frame loop checks it.
"""

from __future__ import annotations

import threading

_STOP = threading.Event()


def request_stop() -> None:
    """Called from the signal handler, before it raises KeyboardInterrupt."""
    _STOP.set()


def clear() -> None:
    _STOP.clear()


def check() -> None:
    """Raise KeyboardInterrupt if a stop was requested (also when the handler's own exception was swallowed)."""
    if _STOP.is_set():
        raise KeyboardInterrupt("stop requested by a signal")
