"""``vsnystra`` command line: ``restore`` (batch restoration of video files and .vpy scripts) and ``weights``.

stdout carries only the ``weights list`` table; progress, logs and the summary go to stderr.
Exit codes: 0 success, 1 some file failed, 2 bad usage or configuration, 130 interrupted.
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import os
import re
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType

from vsnystra.cli import interrupt, preflight
from vsnystra.cli.media import CODECS, DEFAULT_CRF, DEFAULT_PIX_FMT, EncodeSettings
from vsnystra.cli.segments import DEFAULT_SCENE_THRESHOLD, DEFAULT_SEGMENT_FRAMES

log = logging.getLogger("vsnystra.cli")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

MATRIX_HELP = (
    "Colour: YUV input is converted to RGB with its tagged matrix and range (untagged: BT.709 from 1280x720 up, "
    "else BT.601; limited range) and back with the same ones; the output keeps the source's range, primaries, "
    "transfer and matrix tags. Audio, subtitle and data streams are copied untouched."
)


def _value(text: str) -> int | float | str:
    """A number where the text is one, else the text: the settings resolver names what is wrong, as for the filters."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _values(text: str) -> int | float | str | list[int | float | str]:
    """ "128", "2,64,64" or "256x256": one value, or a list like the filters' int[] arguments."""
    parts = [_value(p.strip()) for p in re.split(r",|(?<=\d)x(?=\d)", text)]
    return parts[0] if len(parts) == 1 else parts


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vsnystra", description="RVRT / SwinIR / Uformer restoration with PnP-Nystra.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings, errors and the summary (no progress)")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("restore", help="restore video files or .vpy scripts", epilog=MATRIX_HELP)
    r.add_argument("inputs", nargs="+", metavar="INPUT", help="video files, folders of videos, or .vpy scripts")
    r.add_argument("-o", "--output-dir", type=Path, help="output folder (default: next to each input)")
    r.add_argument(
        "--model",
        help="checkpoint path, bundled or official name (default: RVRT's bundled model); not used for .vpy inputs",
    )
    r.add_argument(
        "--attention", help="auto (PnP-Nystra where it pays on the device; default, as the filters) | nystra | exact"
    )
    r.add_argument("--landmarks", type=_value, help="PnP-Nystra landmarks")
    r.add_argument("--iters", type=_value, help="PnP-Nystra pseudo-inverse iterations (at most 64)")
    r.add_argument("--window", type=_values, help="enlarged attention window: 32 (SwinIR, Uformer), 64,64 (RVRT)")
    r.add_argument(
        "--sigma",
        type=_value,
        help="noise level (0-255 scale) for non-blind denoisers (RVRT denoise; default: estimated from the frames)",
    )
    r.add_argument(
        "--device", help="auto (default) | cpu | cuda | cuda:N | openvino (the CPU through OpenVINO, exact attention)"
    )
    r.add_argument(
        "--backend",
        help="auto (default: OpenVINO where measured faster on this device class, else torch) | torch | openvino",
    )
    r.add_argument(
        "--half",
        action="store_true",
        help="half-precision compute: fp16 on CUDA, bf16 on CPUs with native bf16 (AVX512-BF16, AMX), else fp32",
    )
    r.add_argument("--tile", type=_values, help="spatial tile in input pixels: N or WxH (RVRT: multiples of 8)")
    r.add_argument("--tile-overlap", type=_value, help="tile overlap in input pixels")
    r.add_argument("--chunk", type=_value, help="RVRT: frames per temporal chunk (even; default 16 or the model's)")
    r.add_argument("--chunk-overlap", type=_value, help="RVRT: frames shared by neighbouring chunks (default 2)")
    r.add_argument("--codec", choices=sorted(CODECS), default="x265", help="x265 (default), x264, ffv1 (lossless)")
    crf = ", ".join(f"{k} {v}" for k, v in DEFAULT_CRF.items())
    r.add_argument("--crf", type=float, help=f"quality for x265/x264 (default {crf})")
    pix = ", ".join(f"{k} {v}" for k, v in DEFAULT_PIX_FMT.items())
    r.add_argument("--pix-fmt", help=f"output pixel format (default {pix})")
    r.add_argument("--preset", help="x265/x264 preset (default medium)")
    r.add_argument("--container", default="mkv", choices=["mkv", "mp4", "mov"], help="output container (mkv)")
    r.add_argument(
        "--no-subtitles", action="store_true", help="leave the subtitle streams out (mp4/mov cannot hold SRT/ASS)"
    )
    r.add_argument(
        "--strict",
        action="store_true",
        help="a damaged or truncated input (decode errors, frames missing against the container's count) fails "
        "(default: restore what decodes, with a warning in the summary)",
    )
    r.add_argument(
        "--deinterlace",
        choices=["frame", "field"],
        help="deinterlace interlaced inputs before the model with FFmpeg's bwdif: 'frame' gives one frame per frame "
        "(same frame rate), 'field' one frame per field (twice the frame rate, twice the frames); the field order "
        "tag is dropped. Interlaced inputs are refused without --deinterlace or --progressive; progressive inputs "
        "of the batch are not deinterlaced",
    )
    r.add_argument(
        "--progressive",
        action="store_true",
        help="treat interlaced inputs as progressive (a warning; the output keeps the source's field order tag)",
    )
    r.add_argument("--tag", help="added to the output name (default '.restored' without -o, '' with -o)")
    r.add_argument("--overwrite", action="store_true", help="redo outputs that already exist (default: skip)")
    r.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's choice; per worker on Ray CPU nodes: 1)"
    )
    r.add_argument(
        "--segment-frames",
        type=int,
        default=DEFAULT_SEGMENT_FRAMES,
        metavar="N",
        help=f"most frames one segment writes, the unit of resume and distribution (default {DEFAULT_SEGMENT_FRAMES})",
    )
    r.add_argument(
        "--scene-threshold",
        type=float,
        default=DEFAULT_SCENE_THRESHOLD,
        metavar="T",
        help="scene cuts for RVRT: mean luma difference of neighbouring frames, 0-1, that starts a new shot "
        f"(VapourSynth misc.SCDetect's measure; default {DEFAULT_SCENE_THRESHOLD}; 0: no cuts)",
    )
    r.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="restore on a Ray cluster: auto, HOST:PORT or local[:N] (a throw-away cluster of N workers here); "
        "default $RAY_ADDRESS if set, else in this process",
    )
    r.add_argument(
        "-a",
        "--arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="for .vpy inputs: a string global of the script, like vspipe -a (repeatable)",
    )

    w = sub.add_parser("weights", help="official checkpoints: list, download, import")
    wsub = w.add_subparsers(dest="weights_command", required=True)
    wl = wsub.add_parser("list", help="list official checkpoints (stdout)")
    wl.add_argument("--urls", action="store_true", help="show download URLs")
    wd = wsub.add_parser("download", help="download official checkpoints into the per-user cache")
    wd.add_argument("names", nargs="+", metavar="NAME", help="names or quoted patterns such as 'rvrt-*'")
    wd.add_argument("--force", action="store_true", help="download again even if present")
    wi = wsub.add_parser("import", help="copy a checkpoint downloaded by hand (Uformer) into the cache")
    wi.add_argument("name", metavar="NAME")
    wi.add_argument("file", type=Path, metavar="FILE")
    wsub.add_parser("dir", help="print the cache folder (stdout)")

    e = sub.add_parser("export", help="write a model as ONNX for one input size (checked against eager)")
    e.add_argument("model", metavar="MODEL", help="bundled or official name, or a checkpoint path")
    e.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.onnx")
    e.add_argument("--size", default="128x128", metavar="HxW", help="the model's (padded) input size, e.g. 128x128")
    e.add_argument("--frames", type=int, default=None, metavar="T", help="video models: frames per clip (default 4)")
    e.add_argument("--sigma", type=float, default=None, metavar="S", help="non-blind denoisers: bake noise level in")
    e.add_argument(
        "--attention", default="exact", help="exact (default) | nystra | auto: PnP-Nystra at the trained window"
    )
    e.add_argument("--opset", type=int, default=18)
    return p


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    root = logging.getLogger("vsnystra")
    if not any(getattr(h, "_vsnystra_cli", False) for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("vsnystra: %(levelname)s: %(message)s"))
        h._vsnystra_cli = True  # type: ignore[attr-defined]
        root.addHandler(h)
    root.setLevel(level)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP raise KeyboardInterrupt so temporary outputs are cleaned up, and flag the stop."""

    def handler(signum: int, frame: FrameType | None) -> None:
        interrupt.request_stop()  # survives if the exception below is raised where Python swallows it
        raise KeyboardInterrupt(f"signal {signum}")

    interrupt.clear()
    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None and signal.getsignal(sig) is not signal.SIG_IGN:  # nohup, background jobs: stay ignored
            with suppress(ValueError):  # not the main thread: leave signals alone
                old[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _preflight(args: argparse.Namespace, inputs: Sequence[Path], encode: EncodeSettings, suffix: str, tag: str) -> None:
    """Output folders writable, encoder settings valid, each input's streams fit the container (preflight)."""
    from vsnystra.cli import batch

    folders = [args.output_dir] if args.output_dir else sorted({s.parent for s in inputs if s.is_file()})
    for folder in folders:
        preflight.check_folder(folder, "-o ")
    preflight.check_encode(encode)
    fmt = batch._format_for(Path("x" + suffix)) or args.container
    videos = [
        s
        for s in inputs
        if s.suffix.lower() != ".vpy"
        and s.is_file()
        and (args.overwrite or not batch.output_path(s, args.output_dir, suffix, tag).exists())
    ]
    interlaced = preflight.check_inputs(encode, fmt, videos, subtitles=not args.no_subtitles)
    if args.deinterlace and args.progressive:
        raise preflight.UsageError("restore: --deinterlace and --progressive exclude each other; choose one")
    for src, how in interlaced:
        if args.progressive:
            log.warning("%s is interlaced (%s): treated as progressive (--progressive), field order kept", src, how)
        elif not args.deinterlace:
            raise preflight.UsageError(
                f"restore: {src} is interlaced ({how}); add --deinterlace frame or field (bwdif) or --progressive"
            )
        else:
            rate = "the same frame rate" if args.deinterlace == "frame" else "twice the frame rate"
            log.info(
                "%s is interlaced (%s): deinterlaced with bwdif, one frame per %s (%s)",
                src,
                how,
                args.deinterlace,
                rate,
            )


def _restore(args: argparse.Namespace) -> int:
    from vsnystra.cli import batch

    inputs = batch.expand_inputs(args.inputs)
    if not inputs:
        log.error("restore: no input files found in %s", " ".join(args.inputs))
        return EXIT_USAGE
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.segment_frames < 1 or args.scene_threshold < 0:
        log.error("restore: --segment-frames must be >= 1 and --scene-threshold >= 0 (0: no scene cuts)")
        return EXIT_USAGE
    script_args: dict[str, str] = {}
    for item in args.arg:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            log.error("restore: --arg expects NAME=VALUE with a Python identifier as NAME, got %r", item)
            return EXIT_USAGE
        script_args[name] = value
    encode = EncodeSettings(codec=args.codec, crf=args.crf, pix_fmt=args.pix_fmt, preset=args.preset)
    suffix = "." + args.container
    tag = args.tag if args.tag is not None else ("" if args.output_dir else ".restored")
    try:  # every mistake of the user is one line and exit 2 before any work
        _preflight(args, inputs, encode, suffix, tag)
    except preflight.UsageError as e:
        log.error("%s", e)
        return EXIT_USAGE
    needs_model = any(
        s.suffix.lower() != ".vpy"
        and (args.overwrite or not batch.output_path(s, args.output_dir, suffix, tag).exists())
        for s in inputs
    )
    if args.model and any(s.suffix.lower() == ".vpy" for s in inputs):
        log.warning("--model does not apply to .vpy inputs: a script is encoded as it is (restore inside the script)")
    ray_address = args.ray or os.environ.get("RAY_ADDRESS") or None
    loaded = None
    settings = None
    if needs_model:
        from vsnystra.cli.model import load, model_options  # imports torch: only when a model runs

        settings = model_options(args)
        if ray_address is None:  # on Ray every worker loads its own model
            try:
                loaded = load(settings)
            except Exception as e:  # a model that cannot load is a configuration error for the whole batch
                log.error("%s", e.args[0] if isinstance(e, KeyError) and e.args else e)
                log.debug("traceback", exc_info=True)
                return EXIT_USAGE
    scripts = [s for s in inputs if s.suffix.lower() == ".vpy"]
    videos = [s for s in inputs if s.suffix.lower() != ".vpy"]
    summary = batch.Summary()
    try:
        with _sigterm_as_interrupt():
            if scripts:
                summary = batch.run_batch(
                    scripts,
                    out_dir=args.output_dir,
                    restorer_for=lambda src: None,
                    encode=encode,
                    suffix=suffix,
                    tag=tag,
                    overwrite=args.overwrite,
                    progress=not args.quiet,
                    script_args=script_args,
                )
            if videos and not summary.interrupted:
                from vsnystra.cli import distribute
                from vsnystra.cli.local_executor import LocalExecutor, NoModel

                executor: distribute.Executor = NoModel()
                if loaded is not None:
                    executor = LocalExecutor(loaded)
                elif settings is not None and ray_address is not None:
                    from vsnystra.cli import ray_executor

                    try:
                        executor = ray_executor.connect(ray_address, settings, threads=args.threads)
                    except ray_executor.ClusterError as e:
                        log.error("%s", e)
                        return EXIT_USAGE
                options = distribute.Options(
                    out_dir=args.output_dir,
                    encode=encode,
                    suffix=suffix,
                    tag=tag,
                    overwrite=args.overwrite,
                    segment_frames=args.segment_frames,
                    scene_threshold=args.scene_threshold,
                    model_key=repr(settings),
                    progress=not args.quiet,
                    subtitles=not args.no_subtitles,
                    strict=args.strict,
                    deinterlace=args.deinterlace or "",
                )
                summary = distribute.restore_files(videos, executor, options).merge(summary)
    except KeyboardInterrupt:  # a second Ctrl-C while cleaning up
        summary.interrupted = True
    sys.stderr.write(summary.render() + "\n")
    if summary.interrupted:
        sys.stderr.write("vsnystra restore: interrupted; the unfinished output was removed, rerun to continue\n")
        return EXIT_INTERRUPTED
    return EXIT_FAILED if summary.failed else EXIT_OK


def _weights(args: argparse.Namespace) -> int:
    from vsnystra import zoo
    from vsnystra.cli.progress import ProgressBar

    cmd = args.weights_command
    if cmd == "dir":
        sys.stdout.write(f"{zoo.weights_dir()}\n")
        return EXIT_OK
    if cmd == "list":
        rows = [("name", "arch", "task", "MB", "status", "licence", "url" if args.urls else "file")]
        for w in zoo.OFFICIAL.values():
            status = "downloaded" if zoo.cached_path(w.name).is_file() else ("manual" if w.url is None else "-")
            last = (w.url or w.source) if args.urls else w.file
            rows.append((w.name, w.arch, w.task, f"{w.approx_mb:.0f}", status, w.licence, last))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        for r in rows:
            sys.stdout.write("  ".join(c.ljust(widths[i]) for i, c in enumerate(r[:-1])) + "  " + r[-1] + "\n")
        sys.stdout.write(f"# cache: {zoo.weights_dir()}\n")
        return EXIT_OK
    if cmd == "import":
        try:
            path = zoo.import_file(args.name, args.file)
        except (KeyError, FileNotFoundError, zoo.DownloadError) as e:
            log.error("%s", e.args[0] if isinstance(e, KeyError) else e)
            return EXIT_FAILED
        log.info("imported %s as %s", args.file, path)
        return EXIT_OK
    failed = 0
    names: list[str] = []
    for pattern in args.names:  # shell-style patterns pick several: 'rvrt-*', 'swinir-colordn-*'
        if any(c in pattern for c in "*?["):
            hits = [n for n in zoo.OFFICIAL if fnmatch.fnmatchcase(n, pattern) and zoo.OFFICIAL[n].url]
            if not hits:
                log.error("no downloadable checkpoint matches %r; see `vsnystra weights list`", pattern)
                failed += 1
            names += [n for n in hits if n not in names]
        elif pattern not in names:
            names.append(pattern)
    for name in names:
        if name not in zoo.OFFICIAL:
            log.error("unknown checkpoint %r; see `vsnystra weights list`", name)
            failed += 1
            continue
        entry = zoo.OFFICIAL[name]
        bar = ProgressBar(name, None, unit="bytes")
        try:
            path = zoo.download(entry, force=args.force, progress=None if args.quiet else bar.set)
        except zoo.DownloadError as e:
            log.error("%s", e)
            failed += 1
            continue
        finally:
            if bar.done:
                bar.close()
        log.info("%s: %s", name, path)
    return EXIT_FAILED if failed else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vsnystra`` console script and ``python -m vsnystra``."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits on --help and on usage errors
        return int(e.code) if isinstance(e.code, int) else EXIT_USAGE
    _setup_logging(args.verbose, args.quiet)
    if args.command == "restore":
        from vsnystra.runtime.memory import prefer_huge_pages

        prefer_huge_pages()  # before torch's first allocation (see vsnystra.runtime.memory)
        return _restore(args)
    if args.command == "export":
        from vsnystra.cli.export import export_command

        return export_command(args.model, args.output, args.size, args.opset, args.frames, args.sigma, args.attention)
    try:
        return _weights(args)
    except BrokenPipeError:  # `vsnystra weights list | head`: the reader left, not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
