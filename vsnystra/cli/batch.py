"""Batch driver: many inputs, one output each, nothing lost.

Guarantees: an output is written to a temporary file in the output folder and renamed (atomically, after fsync)
only when complete, so an interrupted run never leaves a partial file under the final name; a rerun skips
outputs that exist; a bad input is reported and the batch goes on; the summary counts done/skipped/failed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from vsnystra.cli.media import EncodeSettings
from vsnystra.cli.outlock import OutputLock
from vsnystra.cli.pipeline import Restorer, process
from vsnystra.cli.progress import ProgressBar, _fmt_time

log = logging.getLogger(__name__)

_EXTS = ".mkv .mp4 .mov .avi .m4v .webm .ts .m2ts .mts .mpg .mpeg .vob .wmv .flv .y4m .mxf .dv .3gp .ogv .vpy"
VIDEO_SUFFIXES = frozenset(_EXTS.split(" "))
_PART_TAG = ".partial-"


@dataclass
class Summary:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[tuple[Path, str]] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    interrupted: bool = False

    def render(self) -> str:
        lines = [
            f"vsnystra restore: {len(self.done)} done, {len(self.skipped)} skipped, {len(self.failed)} failed, "
            f"{self.frames} frames in {_fmt_time(self.seconds)}" + (" (interrupted)" if self.interrupted else "")
        ]
        lines += [f"  FAILED {p}: {why}" for p, why in self.failed]
        lines += [f"  WARNING {p}: {why}" for p, why in self.warnings]
        return "\n".join(lines)


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given; folders contribute their video files (recursively, sorted). Missing paths stay, to fail."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES))
        else:
            out.append(p)
    return out


def output_path(src: Path, out_dir: Path | None, suffix: str, tag: str) -> Path:
    """``<out_dir or src folder>/<stem><tag><suffix>``; the tag keeps an output from overwriting its input."""
    folder = out_dir if out_dir is not None else src.parent
    return folder / f"{src.stem}{tag}{suffix}"


def temp_path(final: Path) -> Path:
    """Hidden temporary name in the same folder (same filesystem, so the rename is atomic)."""
    return final.with_name(f".{final.stem}{_PART_TAG}{os.getpid()}{final.suffix}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(final: Path) -> None:
    """Delete temporary files left for ``final`` by runs that were killed (their process no longer exists)."""
    for p in final.parent.glob(f".{final.stem}{_PART_TAG}*{final.suffix}"):
        pid_text = p.name[len(f".{final.stem}{_PART_TAG}") : -len(final.suffix) or None]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)):
            log.info("removing stale partial output %s", p)
            p.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def run_batch(
    inputs: list[Path],
    *,
    out_dir: Path | None,
    restorer_for: Callable[[Path], Restorer | None],
    encode: EncodeSettings,
    suffix: str = ".mkv",
    tag: str = "",
    container_format: str | None = None,
    overwrite: bool = False,
    stream: TextIO | None = None,
    progress: bool = True,
    script_args: Mapping[str, str] | None = None,
) -> Summary:
    """Restore every input; returns the summary. Ctrl-C (or SIGTERM via the CLI) stops the batch after cleanup
    and is recorded in ``summary.interrupted``."""
    summary = Summary()
    start = time.monotonic()
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    seen: set[Path] = set()
    try:
        for i, src in enumerate(inputs, 1):
            final = output_path(src, out_dir, suffix, tag)
            label = f"[{i}/{len(inputs)}] {src.name}"
            if final.resolve() == src.resolve():
                summary.failed.append(
                    (src, f"output would overwrite the input; use -o DIR or --suffix/--tag ({final})")
                )
                log.error("%s: output would overwrite the input", label)
                continue
            if final in seen:
                summary.failed.append((src, f"another input already writes {final}; rename one of them"))
                continue
            seen.add(final)
            if final.exists() and not overwrite:
                log.info("%s: skipped, %s exists", label, final)
                summary.skipped.append(src)
                continue
            lock = OutputLock(final)
            if not lock.acquire():
                log.warning("%s: skipped, %s is writing %s", label, lock.describe_holder(), final)
                summary.skipped.append(src)
                continue
            try:
                if final.exists() and not overwrite:  # another process finished it meanwhile
                    summary.skipped.append(src)
                    continue
                summary.frames += _one(
                    src,
                    final,
                    label,
                    restorer_for,
                    encode,
                    container_format,
                    stream if progress else None,
                    summary,
                    progress,
                    script_args,
                )
            finally:
                lock.release()
    except KeyboardInterrupt:  # the current file's temporary output is already removed; report, don't raise
        summary.interrupted = True
    finally:
        summary.seconds = time.monotonic() - start
    return summary


def _one(
    src: Path,
    final: Path,
    label: str,
    restorer_for: Callable[[Path], Restorer | None],
    encode: EncodeSettings,
    container_format: str | None,
    stream: TextIO | None,
    summary: Summary,
    progress: bool = True,
    script_args: Mapping[str, str] | None = None,
) -> int:
    if not src.is_file():
        summary.failed.append((src, "no such file"))
        log.error("%s: no such file", label)
        return 0
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final)
    tmp = temp_path(final)
    bar: ProgressBar | None = None

    def on_start(total: int | None) -> None:
        nonlocal bar
        if progress:
            bar = ProgressBar(label, total, stream=stream)

    def on_frame(n: int) -> None:
        if bar is not None:
            bar.set(n)

    fmt = container_format or _format_for(final)
    try:
        frames = process(
            src,
            tmp,
            restorer=restorer_for(src),
            encode=encode,
            container_format=fmt,
            on_start=on_start,
            on_frame=on_frame,
            script_args=script_args,
        )
        _fsync(tmp)
        os.replace(tmp, final)
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        log.error("%s: interrupted; no output written", label)
        raise
    except Exception as e:  # a bad input must not stop the batch
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        reason = f"{type(e).__name__}: {e}"
        summary.failed.append((src, reason))
        log.error("%s: failed: %s", label, reason)
        log.debug("traceback", exc_info=True)
        return 0
    finally:
        if bar is not None:
            bar.close()
    summary.done.append(src)
    log.info("%s: wrote %s (%d frames)", label, final, frames)
    return frames


def _format_for(path: Path) -> str | None:
    """Container format from the final name (the temporary name has the same suffix, so FFmpeg could guess too)."""
    return {".mkv": "matroska", ".mka": "matroska", ".mp4": "mp4", ".mov": "mov", ".m4v": "mp4"}.get(
        path.suffix.lower()
    )
