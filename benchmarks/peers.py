"""The bundled models and the classical peers side by side on the same noisy inputs (issue 17), plus RVRT's checks.

    .venv/bin/python benchmarks/peers.py --datasets Vid4                 # video table (+ checks: --only checks)
    .venv/bin/python benchmarks/peers.py --datasets CBSD68,Kodak24 --limit 12 --image-crop 256
    .venv/bin/python benchmarks/peers.py --only models --rvrt-model runs/x/model.pth   # peers come from the cache

Inputs: clean RGB in [0, 1] plus Gaussian noise N(0, (sigma/255)^2), not clipped, from numpy
``default_rng(seed)`` with one seed per (dataset, item, sigma): CRC-32 of "dataset/item/sigma" (item = Vid4
sequence or image file stem; a sequence's frames are drawn one after the other from its stream, full size, before
the crop). Every method gets the same array. PSNR: RGB on [0, 1], output clipped (not rounded), mean over frames or
images; SSIM: vsnystra.training.metrics.ssim (8-bit levels, mean over R, G, B). SR (Set5/Set14 x2 from the MATLAB
LR files): Y-PSNR/SSIM with a 2-pixel border crop, the project's convention (benchmarks/quality.py). Time: CPU
seconds per frame or image of this process and its ffmpeg children, 1 thread everywhere (torch, OpenCV, ffmpeg),
with the wall time beside it (the CPU is shared, so wall time is only a bound).

Methods, all at strengths fixed before measuring Vid4 (never tuned on the evaluation sets): RVRT with sigma = the
true sigma and chunk / chunk_overlap from the zoo.json "defaults" next to the checkpoint (restore_video's defaults
without one; --rvrt-chunk/--rvrt-overlap override); Uformer frame by frame (blind); CBM3D frame by frame
(bm3d_rgb, sigma_psd = sigma/255); OpenCV fastNlMeansDenoisingColored(Multi) (8-bit, h = hColor = k sigma,
template 7, search 21, temporal window 5 with mirrored ends); ffmpeg nlmeans (8-bit, s = k sigma, p 7, r 15) and
hqdn3d (16-bit, spatial k sigma, temporal 1.5 k sigma), both on the R, G, B planes with equal strengths. Each k was
chosen on DAVIS training clips by benchmarks/peers_calibrate.py (results/peers_calibration.md); the formulas are in
peers_lib.py. Peers' results never change, so they are cached in
benchmarks/results/peers_cache.json, keyed by (dataset, item set, crop, frames, sigma, method, seed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

import numpy as np  # noqa: E402
import peers_lib as L  # noqa: E402
import torch  # noqa: E402
from peers_checks import Clip, checks_table, frame_psnrs, run_checks  # noqa: E402

from vsnystra.archs.registry import load_model  # noqa: E402
from vsnystra.runtime.image import restore_image  # noqa: E402
from vsnystra.runtime.video import DEFAULT_CHUNK, DEFAULT_CHUNK_OVERLAP, restore_video  # noqa: E402
from vsnystra.training.degrade import imresize  # noqa: E402
from vsnystra.training.metrics import psnr, ssim  # noqa: E402
from vsnystra.zoo import bundled_defaults  # noqa: E402

log = logging.getLogger("peers")
RESULTS = HERE / "results"
MODELS = ROOT / "models"


@dataclass
class Cell:
    psnr: float
    ssim: float
    cpu: float  # seconds per frame / image
    wall: float
    cached: bool = False


Table = dict[str, dict[str, Cell]]  # method -> column -> cell


class Cache:
    """Peers' scores by (dataset, item set, crop, frames, sigma, method, seed), as sorted JSON."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, dict[str, float]] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    @staticmethod
    def key(**fields: object) -> str:
        return json.dumps(fields, sort_keys=True, ensure_ascii=False)

    def get(self, key: str) -> Cell | None:
        hit = self.data.get(key)
        return None if hit is None else Cell(**hit, cached=True)

    def put(self, key: str, cell: Cell) -> None:
        self.data[key] = {k: v for k, v in asdict(cell).items() if k != "cached"}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(
            json.dumps(self.data, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
        )


def rvrt_settings(path: Path, chunk: int | None, overlap: int | None) -> tuple[int, int]:
    """(chunk, overlap) as given, else the model's zoo.json "defaults" (bundled, as the front ends read them, or a
    zoo.json next to the checkpoint), else restore_video's."""
    defaults: Mapping[str, object] = bundled_defaults(path)
    index = path.parent / "zoo.json"
    if not defaults and index.is_file():
        for entry in json.loads(index.read_text()).values():
            if entry.get("file") == path.name:
                defaults = entry.get("defaults", {})
    if not defaults and (chunk is None or overlap is None):
        log.warning("%s has no zoo.json defaults; using restore_video's (pass --rvrt-chunk/--rvrt-overlap)", path)
    return (
        chunk if chunk is not None else int(str(defaults.get("chunk", DEFAULT_CHUNK))),
        overlap if overlap is not None else int(str(defaults.get("chunk_overlap", DEFAULT_CHUNK_OVERLAP))),
    )


class Run:
    """One invocation: the models, the cache, and the tables and checks it fills."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.only = set(args.only.split(","))
        self.cache = Cache(args.cache)
        self.tables: dict[str, Table] = {"video": {}, "images": {}, "sr": {}}
        self.models: dict[Path, torch.nn.Module] = {}
        self.rvrt_psnr: dict[tuple[str, float, float], list[float]] = {}  # per-frame PSNR
        self.rvrt_chunk, self.rvrt_overlap = rvrt_settings(args.rvrt_model, args.rvrt_chunk, args.rvrt_overlap)

    def model(self, path: Path) -> torch.nn.Module:
        if path not in self.models:
            self.models[path] = load_model(path).eval()
        return self.models[path]

    def rvrt(self, frames: np.ndarray, sigma: float) -> np.ndarray:
        out = restore_video(
            self.model(self.args.rvrt_model),
            torch.from_numpy(np.ascontiguousarray(frames)),
            sigma=sigma,
            chunk=self.rvrt_chunk,
            chunk_overlap=self.rvrt_overlap,
        )
        assert isinstance(out, torch.Tensor)
        return out.numpy()

    def uformer(self, frames: np.ndarray) -> np.ndarray:
        m = self.model(self.args.uformer_model)
        return np.stack([restore_image(m, torch.from_numpy(np.ascontiguousarray(f))).numpy() for f in frames])

    def put(self, task: str, method: str, column: str, cell: Cell) -> None:
        self.tables[task].setdefault(method, {})[column] = cell
        log.info("%-8s %-28s %-70s %.2f dB %.4f %.3f s", task, column, method, cell.psnr, cell.ssim, cell.cpu)

    def measure(
        self,
        task: str,
        column: str,
        method: str,
        fn: Callable[[np.ndarray], np.ndarray],
        inputs: list[np.ndarray],
        clean: list[np.ndarray],
        key: dict[str, object] | None,
    ) -> np.ndarray | None:
        """Score ``fn`` over ``inputs`` (one array per clip or image); peers (``key`` given) go through the cache."""
        ckey = Cache.key(method=method, **key) if key is not None else None
        if ckey is not None and (hit := self.cache.get(ckey)) is not None:
            self.put(task, method, column, hit)
            return None
        runs = [L.timed(lambda x=x: fn(x)) for x in inputs]
        outs = [r.value for r in runs]
        n = sum(len(o) for o in outs)
        ps, ss = L.scores([f for o in outs for f in o], [f for c in clean for f in c])
        cell = Cell(ps, ss, sum(r.cpu for r in runs) / n, sum(r.wall for r in runs) / n)
        if ckey is not None:
            self.cache.put(ckey, cell)
        self.put(task, method, column, cell)
        return outs[0] if len(outs) == 1 else None

    # ------------------------------------------------------------ tasks

    def video(self, seq: str) -> Clip:
        a = self.args
        paths = L.vid4_paths(a.data, seq, a.frames)
        full = [L.read_rgb(p) for p in paths]
        clean = L.centre_crop(np.stack(full), a.crop)
        clip = Clip(seq, clean, {})
        for sigma in a.video_sigmas:
            seed = L.noise_seed("Vid4", seq, sigma)
            x = L.centre_crop(np.stack(L.add_noise(full, sigma, seed)), a.crop)
            clip.noisy[sigma] = x
            col = f"{seq} σ{sigma:g}"
            if "video" not in a.tasks:
                continue
            key = {"dataset": "Vid4", "items": seq, "crop": a.crop, "frames": len(paths), "sigma": sigma, "seed": seed}
            self.put("video", "noisy input", col, Cell(*L.scores(x, clean), 0.0, 0.0))
            if "peers" in self.only:
                for label, fn in L.classical_peers(True, sigma):
                    self.measure("video", col, label, fn, [x], [clean], key)
            if "models" in self.only:
                label = (
                    f"{a.rvrt_model.stem} (sigma = true sigma, chunk {self.rvrt_chunk}, overlap {self.rvrt_overlap})"
                )
                out = self.measure("video", col, label, lambda v, s=sigma: self.rvrt(v, s), [x], [clean], None)
                if out is not None:
                    self.rvrt_psnr[(seq, sigma, sigma)] = frame_psnrs(out, clean)
                self.measure("video", col, f"{a.uformer_model.stem}, frame by frame", self.uformer, [x], [clean], None)
        return clip

    def images(self, dataset: str) -> None:
        a = self.args
        paths = L.image_paths(a.data, dataset, a.limit)
        full = [L.read_rgb(p) for p in paths]
        clean = [L.centre_crop(f, a.image_crop)[None] for f in full]
        items = f"first {len(paths)}" if a.limit else f"all {len(paths)}"
        for sigma in a.image_sigmas:
            x = [
                L.centre_crop(L.add_noise([f], sigma, L.noise_seed(dataset, p.stem, sigma))[0], a.image_crop)[None]
                for f, p in zip(full, paths, strict=True)
            ]
            col = f"{dataset} σ{sigma:g}"
            key = {"dataset": dataset, "items": items, "crop": a.image_crop, "frames": 1, "sigma": sigma}
            key["seed"] = f"crc32({dataset}/<stem>/{sigma:g})"
            self.put("images", "noisy input", col, Cell(*L.scores([c[0] for c in x], [c[0] for c in clean]), 0, 0))
            if "peers" in self.only:
                for label, fn in L.classical_peers(False, sigma):
                    self.measure("images", col, label, fn, x, clean, key)
            if "models" in self.only:
                self.measure("images", col, a.uformer_model.stem, self.uformer, x, clean, None)

    def sr(self, dataset: str) -> None:
        a = self.args
        hrs = sorted((a.data / "images" / dataset / "HR").glob("*.png"))[: a.limit or None]
        pairs = []
        for hr_path in hrs:
            lr = L.read_rgb(a.data / "images" / dataset / "LR_bicubic" / "X2" / f"{hr_path.stem}x2.png")
            hr = L.read_rgb(hr_path)[:, : lr.shape[1] * 2, : lr.shape[2] * 2]
            if a.image_crop:  # the LR crop's centre, and the HR pixels it covers
                (h, w), c = lr.shape[1:], a.image_crop // 2
                top, left = (h - min(c, h)) // 2, (w - min(c, w)) // 2
                lr = lr[:, top : top + min(c, h), left : left + min(c, w)]
                hr = hr[:, 2 * top : 2 * (top + lr.shape[1]), 2 * left : 2 * (left + lr.shape[2])]
            pairs.append((torch.from_numpy(lr), torch.from_numpy(hr)))
        col = f"{dataset} ×2"
        items = f"first {len(hrs)}" if a.limit else f"all {len(hrs)}"
        methods: list[tuple[str, Callable[[torch.Tensor], torch.Tensor], bool]] = []
        if "peers" in self.only:
            methods.append(("bicubic (MATLAB imresize)", lambda lr: imresize(lr.double(), 2.0).float(), True))
        if "models" in self.only:
            m = self.model(a.swinir_model)
            methods.append((a.swinir_model.stem, lambda lr: restore_image(m, lr), False))
        for label, fn, is_peer in methods:
            key = Cache.key(method=label, dataset=dataset, items=items, crop=a.image_crop, frames=1, sigma=0, seed="-")
            if is_peer and (hit := self.cache.get(key)) is not None:
                self.put("sr", label, col, hit)
                continue
            runs = [L.timed(lambda lr=lr, fn=fn: fn(lr)) for lr, _ in pairs]
            ys = [
                (psnr(r.value, hr, 2, y_channel=True), ssim(r.value, hr, 2, y_channel=True))
                for r, (_, hr) in zip(runs, pairs, strict=True)
            ]
            n = len(runs)
            cell = Cell(*np.mean(ys, axis=0).tolist(), sum(r.cpu for r in runs) / n, sum(r.wall for r in runs) / n)
            if is_peer:
                self.cache.put(key, cell)
            self.put("sr", label, col, cell)

    def psnr_at(self, clips: dict[str, Clip], seq: str, true: float, passed: float) -> list[float]:
        if (seq, true, passed) not in self.rvrt_psnr:
            clip = clips[seq]
            out = self.rvrt(clip.noisy[true], passed)
            self.rvrt_psnr[(seq, true, passed)] = frame_psnrs(out, clip.clean)
        return self.rvrt_psnr[(seq, true, passed)]


# ---------------------------------------------------------------- report

SECTIONS = ("video", "images", "sr", "checks")
TITLES = {
    "video": "Video denoising: Vid4",
    "images": "Image denoising: CBSD68, Kodak24",
    "sr": "Super-resolution x2: Set5, Set14 (Y, border 2)",
    "checks": "RVRT behaviour checks (issue 17 targets)",
}


def machine() -> str:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor(),
    )
    ff = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=False).stdout.split("\n", 1)[0]
    versions = []
    for pkg in ("torch", "numpy", "bm3d", "opencv-python-headless"):
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{pkg} (not installed)")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    cores = f"{os.cpu_count()} cores (load average {load} at the end)"
    return f"{cpu}, {cores}, 1 thread per method; {'; '.join(versions)}; {ff}"


def render_table(table: Table, unit: str) -> list[str]:
    columns = list(dict.fromkeys(c for cells in table.values() for c in cells))
    lines = [
        "| method | " + " | ".join(columns) + f" | CPU s/{unit} (wall) |",
        "|---" * (len(columns) + 2) + "|",
    ]
    for method, cells in table.items():
        row = [f"{cells[c].psnr:.2f} / {cells[c].ssim:.4f}" if c in cells else "-" for c in columns]
        timed = [c for c in cells.values() if c.wall > 0]
        secs = "-"
        if timed:
            secs = f"{np.mean([c.cpu for c in timed]):.3g} ({np.mean([c.wall for c in timed]):.3g})"
            secs += " †" if all(c.cached for c in timed) else ""
        lines.append(f"| {method} | " + " | ".join(row) + f" | {secs} |")
    return lines


def settings(run: Run, task: str) -> str:
    a = run.args
    noise = 'noise seed CRC-32 of "dataset/item/sigma"'
    if task in ("video", "checks"):
        s = f"Vid4 {', '.join(a.sequences)}, first {a.frames} frames, centre {a.crop} crop, {noise}"
        s += f"; sigma {', '.join(f'{x:g}' for x in a.video_sigmas)}" if task == "video" else ""
        return s + f"; RVRT {a.rvrt_model.name} at chunk {run.rvrt_chunk}, overlap {run.rvrt_overlap}"
    crop = f"centre {a.image_crop} crop" if a.image_crop else "full images"
    limit = f"first {a.limit} images" if a.limit else "all images"
    if task == "images":
        return f"{limit}, {crop}, sigma {', '.join(f'{x:g}' for x in a.image_sigmas)}, {noise}"
    return f"{limit}, {crop} (HR; LR half of it), MATLAB LR files"


def section(run: Run, task: str, command: str, checks: list[str]) -> str:
    lines = [f"<!-- peers:{task} -->", f"## {TITLES[task]}", "", f"`{command}`", ""]
    lines += [f"Settings: {settings(run, task)}.", "", f"Machine: {machine()}.", ""]
    if task == "checks":
        lines += checks
    else:
        unit = "frame" if task == "video" else "image"
        lines += ["Cells: PSNR (dB) / SSIM. † = time from the cache (measured by an earlier run).", ""]
        lines += render_table(run.tables[task], unit)
    return "\n".join([*lines, f"<!-- /peers:{task} -->"])


HEADER = """# Bundled models vs classical peers (benchmarks/peers.py)

Each section below is rewritten by the run shown in it; the others are kept. Inputs, metrics, seeds and the peers'
fixed strengths: see the docstrings of benchmarks/peers.py and benchmarks/peers_lib.py. The strengths of ffmpeg
nlmeans / hqdn3d and OpenCV NLM (k per unit of sigma) were chosen on DAVIS training clips, never on these sets
(results/peers_calibration.md). Times are CPU seconds per frame or image of one thread (ffmpeg's included), on a CPU
shared with a training run and other jobs (wall time in brackets, inflated by that sharing)."""


def write_report(path: Path, new: dict[str, str]) -> str:
    old = path.read_text() if path.is_file() else ""
    parts = [HEADER]
    for task in SECTIONS:
        if task in new:
            parts.append(new[task])
        elif (start := old.find(f"<!-- peers:{task} -->")) >= 0:
            end = old.find(f"<!-- /peers:{task} -->", start)
            parts.append(old[start : end + len(f"<!-- /peers:{task} -->")])
    text = "\n\n".join(parts) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    floats = lambda s: [float(x) for x in s.split(",")]  # noqa: E731
    names = lambda s: s.split(",")  # noqa: E731
    ap.add_argument(
        "--only",
        default=None,
        help="comma list of peers, models, checks (default: peers,models, plus checks when Vid4 is among --datasets)",
    )
    ap.add_argument("--datasets", type=names, default=names("Vid4,CBSD68,Kodak24,Set5,Set14"))
    ap.add_argument("--sequences", type=names, default=names("city,walk"), help="Vid4 sequences")
    ap.add_argument("--video-sigmas", type=floats, default=floats("10,20,30"))
    ap.add_argument("--image-sigmas", type=floats, default=floats("15,25,50"))
    ap.add_argument("--frames", type=int, default=12, help="first N frames of each Vid4 sequence (0 = all)")
    ap.add_argument("--crop", type=int, default=256, help="centre crop of the Vid4 frames (0 = full frames)")
    ap.add_argument("--limit", type=int, default=0, help="first N images per image set (0 = all)")
    ap.add_argument("--image-crop", type=int, default=0, help="centre crop of the images (0 = full images)")
    ap.add_argument("--rvrt-model", type=Path, default=MODELS / "rvrt-denoise-small.pth")
    ap.add_argument("--uformer-model", type=Path, default=MODELS / "uformer-denoise-small.pth")
    ap.add_argument("--swinir-model", type=Path, default=MODELS / "swinir-x2-small.pth")
    ap.add_argument("--rvrt-chunk", type=int, default=None, help="override the checkpoint's zoo.json chunk")
    ap.add_argument("--rvrt-overlap", type=int, default=None, help="override the checkpoint's zoo.json chunk_overlap")
    ap.add_argument("--data", type=Path, default=L.DATA, help="the shared data folder")
    ap.add_argument("--cache", type=Path, default=RESULTS / "peers_cache.json")
    ap.add_argument("--out", type=Path, default=RESULTS / "peers.md")
    ap.add_argument("--stdout", action="store_true", help="also write the markdown report to stdout")
    args = ap.parse_args(argv)
    if args.only is None:  # the checks run on Vid4 clips: an image-only run must not redo (and relabel) them
        args.only = "peers,models,checks" if "Vid4" in args.datasets else "peers,models"
    unknown = set(args.only.split(",")) - {"peers", "models", "checks"}
    if unknown:
        ap.error(f"--only: unknown {sorted(unknown)}; use a comma list of peers, models, checks")
    tasks = {"Vid4": "video", "CBSD68": "images", "Kodak24": "images", "Set5": "sr", "Set14": "sr"}
    bad = [d for d in args.datasets if d not in tasks]
    if bad:
        ap.error(f"--datasets: unknown {bad}; use some of {', '.join(tasks)}")
    args.tasks = {tasks[d] for d in args.datasets}
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    torch.set_num_threads(1)
    if os.environ.get("OMP_NUM_THREADS") != "1":
        log.warning("OMP_NUM_THREADS is not 1: bm3d's numpy/scipy may use more threads than the others")
    if "peers" in args.only:
        try:
            import bm3d  # noqa: F401
            import cv2  # noqa: F401
        except ImportError as e:
            raise SystemExit(
                f"peers.py: {e.name} is missing; install the benchmark extra: pip install -e '.[bench]'"
            ) from e
    command = "benchmarks/peers.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    run = Run(args)
    tables = bool(run.only & {"peers", "models"})
    clips: dict[str, Clip] = {}
    if not tables:
        args.tasks.discard("video")  # the clips are built for the checks only
    if "video" in args.tasks or "checks" in run.only:
        for seq in args.sequences:
            clips[seq] = run.video(seq)
    for ds in args.datasets:
        if tables and ds in ("CBSD68", "Kodak24"):
            run.images(ds)
        elif tables and ds in ("Set5", "Set14"):
            run.sr(ds)
    new = {task: section(run, task, command, []) for task in ("video", "images", "sr") if tables and task in args.tasks}
    if "checks" in run.only:
        rows = run_checks(
            run.rvrt, list(clips.values()), lambda s, t, p: run.psnr_at(clips, s, t, p), args.crop, args.frames
        )
        new["checks"] = section(run, "checks", command, checks_table(rows))
    text = write_report(args.out, new)
    log.info("wrote %s (%s)", args.out, ", ".join(new))
    if args.stdout:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
