"""Write models/zoo.json and the model cards of the bundled defaults from their training runs.

    python -m vsnystra.training.publish --runs runs --models models --quality benchmarks/results/quality.md

Each card states the architecture, constructor hyper-parameters, data, steps, wall time and the rows of the quality
table that belong to the model, so that the numbers in a card are the measured ones and never typed by hand.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch

from vsnystra.archs.registry import architecture
from vsnystra.training.presets import PRESETS

DATA_NOTE = (
    "../shared/data/train (the folder beside the repository) only: 12 Urban100 HR images and 4 DAVIS-2016 480p "
    "sequences (bmx-trees, breakdance, car-roundabout, paragliding-launch; JPEG). "
    "No evaluation image was used for training or tuning."
)
DATA_NOTES = {
    "swinir-x2-small": (
        "../shared/data/train (the folder beside the repository) only. First release: 12 Urban100 HR images and 4 "
        "DAVIS-2016 480p sequences (bmx-trees, breakdance, car-roundabout, paragliding-launch; JPEG). Fine-tuning "
        "leg: the 158 photographs of stills/ (Urban100 img_013-090 and Sun-Hays80), all of them. "
        "No evaluation image was used for training or tuning."
    ),
    "rvrt-denoise-small": (
        "../shared/data/train (the folder beside the repository) only: the 12 DAVIS-2016 480p sequences (JPEG), "
        "the 158 photographs of stills/ and the 12 Urban100 HR images (clips made by a synthetic camera). "
        "No evaluation image or clip was used for training or tuning."
    ),
}
NOTES = {
    "swinir-x2-small": (
        "LR = MATLAB-compatible bicubic /2 (antialiased, 8-bit rounding after each pass; bit-exact against the Set5 "
        "LR files), 12 evenly spaced frames per DAVIS sequence plus the Urban100 images. Initialised as a bilinear "
        "upscaler (six feature channels carry the image through a bilinear PixelShuffle kernel, the body enters "
        "through a zeroed conv_after_body), so training learns a residual over bilinear. The first release trained "
        "in two legs (330 steps of a 330-step schedule, then a longer cosine schedule from a warm restart); this "
        "release is a fine-tuning leg from it on the stills at lr 2e-4 (the rate below), whose last step was "
        "chosen over its steps 500 and 1500 on the training folder's Urban100 img_001-012, which that leg did not "
        "train on (benchmarks/image_checkpoints.py: 29.82 dB Y for the first release, 29.72 / 30.01 / 30.03 at "
        "steps 500 / 1500 / 2000)."
    ),
    "uformer-denoise-small": (
        "Blind colour Gaussian denoiser: sigma ~ U[0, 50] per patch (0-255 scale), noise not clipped. "
        "img_size 128 (bottleneck not shifted, as the official test default). Square inputs, multiple of 128. "
        "Trained in two legs: 420 steps of a 420-step schedule, then resumed on a longer cosine schedule (a warm "
        "restart at the rate the longer schedule has at step 420)."
    ),
    "rvrt-denoise-small": (
        "Non-blind video denoiser: input = 3 noisy channels + a constant sigma/255 map; sigma ~ U[0, 50] per clip, "
        "and for 10 % of clips U[0, 2] (told there is no noise, the model must hand its input back). SpyNet could "
        "not be pretrained here (no optical-flow data or weights): its last convolution per level is zeroed and "
        "it is frozen, so it predicts exactly zero flow (training skips it, which is exact) and the guided "
        "deformable attention learns its own offsets; SpyNet weights are stored (official layout) but carry no "
        "information. num_blocks [1, 1, 1] (official [1, 2, 1]) and ungrouped input convolutions in the four "
        "backbones and the reconstruction (inputconv_groups [1, 1, 1, 1, 1, 1]; official [1, 3, 4, 6, 8, 4]). "
        "Clips: 6 frames, half from the 12 DAVIS sequences, half from the stills moved by a synthetic camera "
        "(sub-pixel pans up to 2 px/frame, zooms up to 1 %/frame, rotations up to 0.25 deg/frame; 20 % static; "
        "vsnystra/training/motion.py). The first release (space-to-depth start, vsnystra/training/rvrt_init.py) "
        "ignored time: its propagation branches entered the reconstruction through weights that had stayed near "
        "zero (norm 0.24-0.39 against 7.1 for the single-frame path) and carried misaligned neighbours that cost "
        "1.1 dB on moving training clips. This release starts from that file rewired by "
        "vsnystra/training/rvrt_temporal.py: each alignment module returns the previous clip at the same place, "
        "each backbone passes its freshest input on, and the reconstruction reads the branches as (past - "
        "present), which leaves the output of the single-frame path unchanged; training-time mixing gates "
        "(folded into the weights on export) then learn how much of the aligned past each branch blends in. The "
        "fine-tuning leg ran its first 200 steps towards a peak rate of 5e-5; the quality on DAVIS training clips "
        "fell, so it resumed from step 200 at 1.5e-5 (the rate below); the backbones' input convolutions train at "
        "10x and the mixing gates at 40x that rate. The leg ran over two sessions (steps 0-1290, then 1275-2000 "
        "resumed from its state); the checkpoint of step 2000 was chosen over those of steps 750 and 1275 on DAVIS "
        "training clips (camel, bmx-trees, car-roundabout; benchmarks/rvrt_checkpoints.py), where it is better on "
        "every measure."
    ),
}


QUALITY_HEADING = "## Quality (benchmarks/quality.py)"
CAVEAT = "Small model, short CPU training: far below the official checkpoints; use those for real work."

# Earlier releases that a run was fine-tuned from (``--init``), by the sha256 of the file it started from: their
# steps and wall time (from the card published with that file), so a card states the whole training, not one leg.
PRIOR_RELEASES: dict[str, tuple[int, float, str]] = {
    "5543561ca1ff661d4946dcff1568c1a378c1608d16e303853af1ecb64ac11cbc": (
        2600,
        100.7,
        "first swinir-x2-small release (two legs on a shared 2-core CPU, 1 thread)",
    ),
    "94830f239567d9f1bbc6b656560f7870a7cfd51aebd72f516bb6a5cf185d7229": (
        1900,
        89.9,
        "uformer-denoise-small of session 2 (two legs on a shared 2-core CPU, 1 thread)",
    ),
    "2f9cfd141b5429f4b3c4012ee828a2ac9fa3920388fca231d6d7dc101ad7a1ed": (
        1200,
        63.7,
        "rvrt-denoise-small of session 2 (a shared 2-core CPU, 1 thread)",
    ),
    "7199e5e39def968d7c0a3bcb1f2c998dbe18f3051d723c00e4a6975b5eac7156": (
        2741,
        155.7,
        "rvrt-denoise-small of sessions 2-3 (two legs on a shared 2-core CPU, 1 thread)",
    ),
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def quality_rows(table: Path, name: str) -> list[str]:
    """The sections of benchmarks/results/quality.md (one per command) that hold rows of ``name``: the command,
    its settings line, the table header, the reference rows (bicubic / noisy input) and the model's rows."""
    if not table.is_file():
        return []
    out: list[str] = []
    sections = table.read_text(encoding="utf-8").split("\n## ")[1:]
    for sec in sections:
        lines = sec.splitlines()
        rows = [ln for ln in lines if ln.startswith(f"| {name} |")]
        if not rows:
            continue
        head = [ln for ln in lines if ln.startswith(("| model", "|---"))][:2]
        refs = [ln for ln in lines if ln.startswith(("| bicubic |", "| noisy input |"))]
        settings = [ln for ln in lines if ln.startswith("Settings:")]
        out += [f"Command: {lines[0]}", "", *settings, "", *head, *refs, *rows, ""]
    return out


def card(name: str, run: Path, pth: Path, table: Path) -> str:
    preset = PRESETS[name]
    st: dict[str, Any] = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    recipe = {**preset.recipe(), **st.get("recipe", {})}  # the run's own settings (overrides) where it saved them
    buffers = ("attn_mask", ".mean", ".std")  # float buffers that are not weights
    params = sum(v.numel() for k, v in st["model"].items() if v.is_floating_point() and not k.endswith(buffers))
    losses = st["losses"]
    tail = losses[-50:] if losses else [float("nan")]
    q = quality_rows(table, name)
    lines = [
        f"# {name}",
        "",
        f"Bundled default of `core.nystra.{architecture(preset.arch).filter_name}`: "
        f"{preset.arch} architecture in the official checkpoint layout, trained by this project "
        f"(`python -m vsnystra.training --model {name}`). Loads with `vsnystra.load_model`.",
        "",
        "## Architecture and hyper-parameters",
        "",
        f"- arch: {preset.arch}, task: {preset.task}, scale: {preset.scale}",
        f"- constructor: `{json.dumps(preset.kwargs, sort_keys=True)}`",
        f"- {params:,} parameters; file {pth.stat().st_size / 1e6:.2f} MB "
        "(float tensors stored in fp16, upcast on load; int64 index buffers as in the official layout)",
        "",
        "## Training",
        "",
        f"- data: {DATA_NOTES.get(name, DATA_NOTE)}",
        f"- {NOTES.get(name, '')}",
        f"- patches: {recipe['patch']} px{' (LR)' if preset.task == 'sr' else ''}, batch {recipe['batch']}"
        + (f", {recipe['frames']}-frame clips" if preset.task == "video_denoise" else "")
        + ", random flips/transposes; Charbonnier loss; AdamW (betas 0.9/0.99, no weight decay), "
        f"lr {recipe['lr']:g}, {recipe['warmup']}-step warm-up then cosine decay, gradient clipping 1.0; seed 0",
        *iteration_lines(st),
        f"- final training loss (mean of the last {len(tail)} steps): {sum(tail) / len(tail):.5f}",
        "",
        *quality_section(q),
    ]
    return "\n".join(lines)


def iteration_lines(st: dict[str, Any]) -> list[str]:
    """The card's iterations line: one leg, or a fine-tuning leg on top of an earlier release (``--init``)."""
    leg = f"{st['step']} of a {st['steps']}-step schedule, {st['elapsed'] / 60:.1f} min"
    init = st.get("init") or {}
    prior = PRIOR_RELEASES.get(init.get("sha256", ""))
    if not init:
        return [f"- iterations: {leg} on a shared 2-core CPU, 1 torch thread (no GPU)"]
    if prior is None:
        return [f"- iterations: {leg}, fine-tuned from {init['file']} (sha256 {init['sha256'][:12]}…)"]
    steps, minutes, what = prior
    total_min = minutes + st["elapsed"] / 60
    return [
        f"- iterations: {steps + st['step']} in all, {total_min:.1f} min of one CPU thread (no GPU): {steps} steps "
        f"({minutes:.1f} min) of the earlier release, the {what}, then a fine-tuning leg from that file "
        f"({init['file']}, sha256 {init['sha256'][:12]}…, fresh optimizer, warm-up and cosine decay): {leg}, "
        "1 thread on a shared 2-core CPU"
    ]


def refresh_quality(card_text: str, name: str, table: Path) -> str:
    """Replace a card's quality section with the current rows of the quality table (training section kept)."""
    head = card_text.split(QUALITY_HEADING)[0]
    return head + "\n".join(quality_section(quality_rows(table, name)))


def quality_section(rows: list[str]) -> list[str]:
    """A card's closing section: the model's rows of the quality table and the caveat."""
    return [QUALITY_HEADING, "", *(rows or ["Not measured yet."]), "", CAVEAT, ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--models", type=Path, default=Path("models"))
    ap.add_argument("--quality", type=Path, default=Path("benchmarks/results/quality.md"))
    args = ap.parse_args(argv)
    index: dict[str, dict[str, Any]] = {}
    zoo = args.models / "zoo.json"
    if zoo.is_file():
        index = json.loads(zoo.read_text(encoding="utf-8"))
    for name, preset in PRESETS.items():
        pth = args.models / f"{name}.pth"
        if not pth.is_file():
            continue
        run = args.runs / name
        card_path = args.models / f"{name}.md"
        if (run / "last.pt").is_file():
            card_path.write_text(card(name, run, pth, args.quality), encoding="utf-8")
        elif card_path.is_file():  # no run here (trained in an earlier session): refresh the measured rows only
            text = card_path.read_text(encoding="utf-8")
            card_path.write_text(refresh_quality(text, name, args.quality), encoding="utf-8")
        index[name] = {
            "file": pth.name,
            "arch": preset.arch,
            "task": preset.task.removeprefix("video_"),  # zoo tasks name what is restored, not the data
            "sha256": sha256(pth),
            "card": f"{name}.md",
        }
        if preset.inference:
            index[name]["defaults"] = dict(preset.inference)
        sys.stderr.write(f"publish: {name} {index[name]['sha256'][:12]} {pth.stat().st_size / 1e6:.2f} MB\n")
    zoo.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
