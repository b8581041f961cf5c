"""Command line of the training recipe: train (resumably) and export a checkpoint in the official container."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from vsnystra.runtime.memory import prefer_huge_pages
from vsnystra.training.loop import CHECKPOINT, RunConfig, Trainer, export
from vsnystra.training.presets import PRESETS, get_preset

log = logging.getLogger("vsnystra.training")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m vsnystra.training",
        description="Train a compact vsnystra default (SwinIR x2, Uformer denoiser, RVRT video denoiser) from a "
        "folder of images or of frame sequences. Resumes from <run>/last.pt when it exists.",
    )
    ap.add_argument("--model", required=True, choices=sorted(PRESETS), help="model preset")
    ap.add_argument(
        "--data", nargs="+", type=Path, required=True, help="image folders (video: one sub-folder per sequence)"
    )
    ap.add_argument("--run", type=Path, required=True, help="run folder: checkpoints (last.pt) live here")
    ap.add_argument("--steps", type=int, default=2000, help="total optimizer steps (length of the cosine schedule)")
    ap.add_argument("--minutes", type=float, default=0.0, help="stop (and save) after this much wall time; 0 = none")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for this process")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-every", type=int, default=100, help="checkpoint period in steps")
    ap.add_argument("--log-every", type=int, default=10, help="progress line period in steps (stderr)")
    ap.add_argument(
        "--override",
        type=json.loads,
        default=None,
        help='JSON preset overrides, e.g. \'{"batch": 4, "kwargs": {"embed_dim": 60}}\'',
    )
    ap.add_argument("--fresh", action="store_true", help="ignore an existing last.pt and start over")
    ap.add_argument(
        "--init",
        type=Path,
        default=None,
        help="fine-tune: start a new run from these weights (an exported checkpoint of the same preset, e.g. "
        "models/<name>.pth) with a fresh optimizer and schedule; ignored when the run resumes from last.pt",
    )
    ap.add_argument(
        "--init-rewire",
        action="store_true",
        help="with --init: the file may have an earlier layout; load what fits, then rewire the RVRT propagation "
        "branches so that they start as temporal paths (vsnystra.training.rvrt_temporal)",
    )
    ap.add_argument(
        "--stills",
        nargs="*",
        type=Path,
        default=[],
        help="video presets: folders of still photographs turned into clips by a synthetic camera",
    )
    ap.add_argument(
        "--export", type=Path, default=None, help="after training write the official-format checkpoint here"
    )
    ap.add_argument("--export-only", action="store_true", help="only export <run>/last.pt (no training)")
    ap.add_argument("--fp32", action="store_true", help="export float32 tensors (default: fp16, half the size)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prefer_huge_pages()  # before the first tensor (vsnystra.runtime.memory)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, args.threads))  # a CLI process: its own thread budget, not library state
    preset = get_preset(args.model, args.override)
    cfg = RunConfig(
        data=list(args.data),
        run_dir=args.run,
        steps=args.steps,
        minutes=args.minutes,
        seed=args.seed,
        save_every=args.save_every,
        log_every=args.log_every,
        init=args.init,
        init_rewire=args.init_rewire,
        stills=list(args.stills),
    )
    log.info("preset %s: %s", preset.name, preset.describe())
    trainer = Trainer(preset, cfg)
    n_params = sum(p.numel() for p in trainer.model.parameters())
    log.info(
        "%d parameters (%d trainable)", n_params, sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    )
    ckpt = args.run / CHECKPOINT
    if ckpt.is_file() and not args.fresh:
        trainer.load(ckpt)
    elif args.export_only:
        log.error("--export-only: %s does not exist; train first", ckpt)
        return 2
    if not args.export_only:
        trainer.run()
    if args.export is not None:
        buffers = frozenset(name for name, _ in trainer.model.named_buffers() if name.startswith("spynet."))
        export(
            trainer.export_state(),
            preset.arch,
            args.export,
            fp16=not args.fp32,
            steps=trainer.step,
            keep_fp32=buffers,
        )
        log.info("exported %s (step %d, %.2f MB)", args.export, trainer.step, args.export.stat().st_size / 1e6)
    return 0
