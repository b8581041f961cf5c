"""One writer per output file among ``vsnystra restore`` processes (on one machine, or sharing a folder over NFS).

A process claims an output before it plans, restores or cleans up anything of it: ``<folder>/.<name>.lock`` held
with ``flock`` on an open descriptor, with the holder's pid and host written in it. The kernel drops the lock when
its process ends however it ends, so the lock of a killed run is simply taken over (the file left behind is reused);
a second live process finds it held, skips that output and says who writes it. Where ``fcntl`` is missing (Windows)
the file is created exclusively instead, and a file whose process no longer runs on this host is taken over.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from pathlib import Path

log = logging.getLogger(__name__)


def lock_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _holder(path: Path) -> tuple[int, str] | None:
    """(pid, host) written in a lock file, if readable."""
    try:
        pid_text, _, host = path.read_text().strip().partition("@")
        return int(pid_text), host
    except (OSError, ValueError):
        return None


class OutputLock:
    """The claim of this process on one output file; ``acquire`` returns False when another live process holds it."""

    def __init__(self, final: Path) -> None:
        self.path = lock_path(final)
        self.holder: tuple[int, str] | None = None  # who holds it, after a failed acquire
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:
            return self._acquire_exclusive()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                self.holder = _holder(self.path)
                return False
            try:  # the holder before us may have removed the file between our open and our lock: lock the new one
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _holder(self.path)
        if previous is not None and previous[0] != os.getpid():
            log.info("%s: taking over the lock of pid %d on %s (no longer running)", self.path, *previous)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode())
        self._fd = fd
        return True

    def _acquire_exclusive(self) -> bool:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _holder(self.path)
                if holder is not None and holder[1] == socket.gethostname() and not _pid_alive(holder[0]):
                    log.info("%s: taking over the lock of pid %d (no longer running)", self.path, holder[0])
                    self.path.unlink(missing_ok=True)
                    continue
                self.holder = holder
                return False
            os.write(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode())
            self._fd = fd
            return True
        return False

    def describe_holder(self) -> str:
        if self.holder is None:
            return "another vsnystra restore"
        pid, host = self.holder
        return f"another vsnystra restore (pid {pid} on {host})"

    def release(self) -> None:
        """Remove the lock file (ours) and drop the lock; idempotent."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None
