"""Official upstream checkpoints: the catalogue, the per-user cache, and a resumable, verified download.

Why a catalogue of our own: the filters and the CLI accept short names ("rvrt-denoise-davis") and the
download must know where each file lives, its upstream file name, and what to check after the transfer.
No upstream publishes sha256 sums; we store None and verify whatever is known (sha256, exact size).

Environment overrides (tests point them at a temporary folder and a loopback server):
    VSNYSTRA_WEIGHTS_DIR        cache folder (default: platformdirs user_cache_path("vsnystra")/weights)
    VSNYSTRA_WEIGHTS_BASE_URL   replaces the release folder: URL = BASE_URL + "/" + file name
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
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

Arch = Literal["swinir", "uformer", "rvrt"]

_SWINIR_RELEASE = "https://github.com/JingyunLiang/SwinIR/releases/download/v0.0"
_RVRT_RELEASE = "https://github.com/JingyunLiang/RVRT/releases/download/v0.0"
_UFORMER_SOURCE = "https://github.com/ZhendongWang6/Uformer (README: OneDrive/SharePoint links)"

WEIGHTS_DIR_ENV = "VSNYSTRA_WEIGHTS_DIR"
BASE_URL_ENV = "VSNYSTRA_WEIGHTS_BASE_URL"
_CHUNK = 1 << 16


@dataclass(frozen=True)
class OfficialWeights:
    """One published checkpoint. ``release`` is None where no stable direct URL exists (Uformer)."""

    name: str
    arch: Arch
    task: str
    file: str
    release: str | None
    licence: str
    approx_mb: float
    sha256: str | None = None
    size: int | None = None  # exact byte size, where published
    note: str = ""

    @property
    def url(self) -> str | None:
        """Download URL, honouring VSNYSTRA_WEIGHTS_BASE_URL; None when the file must be fetched by hand."""
        base = os.environ.get(BASE_URL_ENV)
        if self.release is None:
            return None
        return f"{(base or self.release).rstrip('/')}/{self.file}"

    @property
    def source(self) -> str:
        return self.release or _UFORMER_SOURCE


def _catalogue() -> dict[str, OfficialWeights]:
    out: list[OfficialWeights] = []
    sw, lic_sw = _SWINIR_RELEASE, "Apache-2.0"
    for s, mb in zip((2, 3, 4, 8), (67.1, 67.8, 67.6, 68.2), strict=True):
        out.append(
            OfficialWeights(
                f"swinir-classical-x{s}",
                "swinir",
                "sr",
                f"001_classicalSR_DF2K_s64w8_SwinIR-M_x{s}.pth",
                sw,
                lic_sw,
                mb,
            )
        )
    for s, mb in zip((2, 3, 4, 8), (58.8, 59.6, 59.4, 60.0), strict=True):
        out.append(
            OfficialWeights(
                f"swinir-classical-div2k-x{s}",
                "swinir",
                "sr",
                f"001_classicalSR_DIV2K_s48w8_SwinIR-M_x{s}.pth",
                sw,
                lic_sw,
                mb,
            )
        )
    for s in (2, 3, 4):
        out.append(
            OfficialWeights(
                f"swinir-lightweight-x{s}",
                "swinir",
                "sr",
                f"002_lightweightSR_DIV2K_s64w8_SwinIR-S_x{s}.pth",
                sw,
                lic_sw,
                17.0,
            )
        )
    real = "003_realSR_BSRGAN_DFO_s64w8_SwinIR-M"
    out.append(
        OfficialWeights("swinir-realsr-x4-gan", "swinir", "sr", f"{real}_x4_GAN.pth", sw, lic_sw, 67.1, size=67_129_861)
    )
    out.append(OfficialWeights("swinir-realsr-x4-psnr", "swinir", "sr", f"{real}_x4_PSNR.pth", sw, lic_sw, 67.1))
    out.append(OfficialWeights("swinir-realsr-x2-gan", "swinir", "sr", f"{real}_x2_GAN.pth", sw, lic_sw, 67.1))
    out.append(
        OfficialWeights(
            "swinir-realsr-large-x4-gan",
            "swinir",
            "sr",
            "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN.pth",
            sw,
            lic_sw,
            133.7,
        )
    )
    for n in (15, 25, 50):
        out.append(
            OfficialWeights(
                f"swinir-graydn-{n}",
                "swinir",
                "denoise",
                f"004_grayDN_DFWB_s128w8_SwinIR-M_noise{n}.pth",
                sw,
                lic_sw,
                122.7,
            )
        )
        out.append(
            OfficialWeights(
                f"swinir-colordn-{n}",
                "swinir",
                "denoise",
                f"005_colorDN_DFWB_s128w8_SwinIR-M_noise{n}.pth",
                sw,
                lic_sw,
                122.7,
            )
        )
    for q in (10, 20, 30, 40):
        out.append(
            OfficialWeights(
                f"swinir-car-jpeg{q}", "swinir", "car", f"006_CAR_DFWB_s126w7_SwinIR-M_jpeg{q}.pth", sw, lic_sw, 102.6
            )
        )
        out.append(
            OfficialWeights(
                f"swinir-colorcar-jpeg{q}",
                "swinir",
                "car",
                f"006_colorCAR_DFWB_s126w7_SwinIR-M_jpeg{q}.pth",
                sw,
                lic_sw,
                102.7,
            )
        )
    rv, lic_rv = _RVRT_RELEASE, "CC-BY-NC-4.0"
    rvrt = (
        ("rvrt-sr-reds", "sr", "001_RVRT_videosr_bi_REDS_30frames.pth", 45.4),
        ("rvrt-sr-vimeo-bi", "sr", "002_RVRT_videosr_bi_Vimeo_14frames.pth", 45.4),
        ("rvrt-sr-vimeo-bd", "sr", "003_RVRT_videosr_bd_Vimeo_14frames.pth", 45.4),
        ("rvrt-deblur-dvd", "deblur", "004_RVRT_videodeblurring_DVD_16frames.pth", 56.5),
        ("rvrt-deblur-gopro", "deblur", "005_RVRT_videodeblurring_GoPro_16frames.pth", 56.5),
        ("rvrt-denoise-davis", "denoise", "006_RVRT_videodenoising_DAVIS_16frames.pth", 53.4),
    )
    for name, task, file, mb in rvrt:
        out.append(OfficialWeights(name, "rvrt", task, file, rv, lic_rv, mb))
    manual = "no stable direct URL: download Uformer_B.pth from the README link by hand, then `vsnystra weights import`"
    out.append(
        OfficialWeights("uformer-b-sidd", "uformer", "denoise", "Uformer_B_SIDD.pth", None, "MIT", 584.0, note=manual)
    )
    out.append(
        OfficialWeights("uformer-b-gopro", "uformer", "deblur", "Uformer_B_GoPro.pth", None, "MIT", 584.0, note=manual)
    )
    return {w.name: w for w in out}


OFFICIAL: dict[str, OfficialWeights] = _catalogue()


def weights_dir() -> Path:
    """The per-user folder holding downloaded official checkpoints (not created here)."""
    env = os.environ.get(WEIGHTS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_path("vsnystra")) / "weights"


def cached_path(name: str) -> Path:
    """Where the official checkpoint ``name`` lives once downloaded (it may not exist)."""
    return weights_dir() / official(name).file


def official(name: str) -> OfficialWeights:
    """Catalogue entry for ``name``; the error lists the known names."""
    try:
        return OFFICIAL[name]
    except KeyError:
        known = ", ".join(sorted(OFFICIAL))
        raise KeyError(f"vsnystra.weights: unknown official checkpoint {name!r}; known names: {known}") from None


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
    with lock.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DownloadError(
                f"vsnystra weights download: {name} is being downloaded by another process ({lock} is locked); "
                "wait for it to finish"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


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
    raise DownloadError(
        f"vsnystra weights download: {w.name} from {url} failed: {last_error}; "
        f"rerun the same command to resume from {part}"
    )


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
