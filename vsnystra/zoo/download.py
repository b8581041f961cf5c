"""Resumable, verified download of official checkpoints into the per-user cache, and import of hand-fetched ones.

No upstream publishes sha256 sums; we verify whatever the catalogue knows (sha256, exact size) and log the sha256
of every file received so users can report it.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
import urllib.response
from collections.abc import Callable, Iterator
from pathlib import Path

from vsnystra.zoo.official import OfficialWeights, official, weights_dir

log = logging.getLogger(__name__)

_CHUNK = 1 << 16

Progress = Callable[[int, int | None], None]
"""Called with (bytes done, total bytes or None) while a download runs."""


class DownloadError(RuntimeError):
    """A download that could not complete; a resumable .part file may remain."""


class ChecksumError(DownloadError):
    """The received file does not match the expected sha256 or size; it is deleted, never kept."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify(entry: OfficialWeights, path: Path) -> str:
    """Check size and sha256 where known; returns the sha256 (logged so users can report it)."""
    size = path.stat().st_size
    if entry.size is not None and size != entry.size:
        raise ChecksumError(f"vsnystra weights: {entry.name}: size {size} B, expected {entry.size} B")
    digest = sha256_file(path)
    if entry.sha256 is not None and digest != entry.sha256.lower():
        raise ChecksumError(f"vsnystra weights: {entry.name}: sha256 {digest}, expected {entry.sha256}")
    return digest


def _total_from(resp: urllib.response.addinfourl, offset: int) -> int | None:
    rng = resp.headers.get("Content-Range")
    if rng and "/" in rng:
        tail = rng.rsplit("/", 1)[1].strip()
        if tail.isdigit():
            return int(tail)
    length = resp.headers.get("Content-Length")
    if length and length.isdigit():
        return int(length) + (offset if resp.status == 206 else 0)
    return None


def _fetch_once(url: str, part: Path, timeout: float, progress: Progress | None) -> tuple[int, int | None]:
    """One HTTP attempt resuming ``part``; returns (bytes on disk, total or None)."""
    offset = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "vsnystra"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # range past the end: complete if the sizes agree, else start over
            rng = e.headers.get("Content-Range", "") if e.headers else ""
            tail = rng.rsplit("/", 1)[-1].strip()
            if tail.isdigit() and int(tail) == offset:
                return offset, offset
            log.warning("%s is larger than the remote file; downloading again from 0", part.name)
            part.unlink(missing_ok=True)
            return _fetch_once(url, part, timeout, progress)
        raise
    with resp:
        if offset and resp.status != 206:
            log.info("server ignored the Range request; restarting %s from 0", part.name)
            offset = 0
        total = _total_from(resp, offset)
        done = offset
        with part.open("r+b" if offset else "wb") as f:
            f.seek(offset)
            f.truncate()
            while block := resp.read(_CHUNK):
                f.write(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
    return done, total


def download(
    entry: OfficialWeights | str,
    *,
    dest_dir: Path | None = None,
    force: bool = False,
    retries: int = 3,
    timeout: float = 60.0,
    backoff: float = 1.0,
    progress: Progress | None = None,
) -> Path:
    """Download one official checkpoint into the cache: resumable (.part + Range), verified, atomic rename."""
    w = official(entry) if isinstance(entry, str) else entry
    url = w.url
    if url is None:
        raise DownloadError(
            f"vsnystra weights download: {w.name} has no direct URL ({w.source}); {w.note}; "
            f"then run `vsnystra weights import {w.name} FILE`"
        )
    folder = dest_dir if dest_dir is not None else weights_dir()
    target = folder / w.file
    if target.is_file() and not force:
        _verify(w, target)
        log.info("%s already downloaded: %s", w.name, target)
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.with_name(target.name + ".lock"), w.name):
        if target.is_file() and not force:  # another process finished it while we waited for nothing
            _verify(w, target)
            return target
        return _download_locked(w, url, target, force, retries, timeout, backoff, progress)


@contextlib.contextmanager
def _exclusive(lock: Path, name: str) -> Iterator[None]:
    """One downloader per file: a second process fails fast instead of interleaving writes to the same .part."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; concurrent downloads of one file are the user's risk
        yield
        return
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise DownloadError(
                f"vsnystra weights download: {name} is being downloaded by another process ({lock} is locked); "
                "wait for it to finish"
            ) from None
        try:  # the previous holder removed the file between our open and our lock: lock the new one
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:  # the lock file goes with the lock (removed while held, so nobody locks a file that is gone)
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)


def _download_locked(
    w: OfficialWeights,
    url: str,
    target: Path,
    force: bool,
    retries: int,
    timeout: float,
    backoff: float,
    progress: Progress | None,
) -> Path:
    part = target.with_name(target.name + ".part")
    if force:
        part.unlink(missing_ok=True)
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(backoff * 2 ** (attempt - 1), 30.0))
        try:
            done, total = _fetch_once(url, part, timeout, progress)
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:  # incl. timeouts, resets
            last_error = e
            if isinstance(e, urllib.error.HTTPError) and e.code < 500 and e.code != 408:
                break
            log.warning("%s: attempt %d failed (%s); resuming", w.name, attempt + 1, e)
            continue
        if total is not None and done < total:
            last_error = DownloadError(f"connection closed after {done} of {total} B")
            log.warning("%s: %s; resuming", w.name, last_error)
            continue
        try:
            digest = _verify(w, part)
        except ChecksumError:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, target)
        log.info("%s: %s (%d B, sha256 %s)", w.name, target, done, digest)
        return target
    if part.is_file() and part.stat().st_size:
        fix = f"rerun the same command to resume from {part} ({part.stat().st_size} B)"
    else:
        part.unlink(missing_ok=True)
        fix = "check the network connection (or download the file by hand: `vsnystra weights import`) and rerun"
    raise DownloadError(f"vsnystra weights download: {w.name} from {url} failed: {last_error}; {fix}")


def import_file(entry: OfficialWeights | str, source: Path, *, dest_dir: Path | None = None) -> Path:
    """Copy a checkpoint fetched by hand (Uformer) into the cache under its catalogue name, verified."""
    w = official(entry) if isinstance(entry, str) else entry
    if not source.is_file():
        raise FileNotFoundError(f"vsnystra weights import: {source} does not exist; pass the downloaded .pth file")
    folder = dest_dir if dest_dir is not None else weights_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / w.file
    part = target.with_name(target.name + ".part")
    shutil.copyfile(source, part)
    try:
        _verify(w, part)
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, target)
    return target
