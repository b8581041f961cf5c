"""Training data: image folders and frame-sequence folders, random patches, flips and rotations.

All randomness comes from one ``torch.Generator`` owned by the training loop, so a run resumed from its checkpoint
(which stores the generator state) draws exactly the same patches as an uninterrupted run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def read_image(path: Path) -> torch.Tensor:
    """An RGB image file as a uint8 tensor (3, H, W)."""
    with Image.open(path) as im:
        arr = np.array(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def collect_images(roots: Sequence[Path], per_folder: int = 0) -> list[Path]:
    """All images under ``roots`` (recursively). per_folder > 0 keeps that many evenly spaced files per folder,
    so that long frame sequences do not swamp a handful of still images."""
    out: list[Path] = []
    for root in roots:
        root = Path(root)
        if root.is_file():
            out.append(root)
            continue
        if not root.is_dir():
            raise FileNotFoundError(f"vsnystra.training: data folder {root} does not exist; pass --data <folder>")
        folders = [root, *sorted(p for p in root.rglob("*") if p.is_dir())]
        for folder in folders:
            files = list_images(folder)
            if per_folder > 0 and len(files) > per_folder:
                idx = np.linspace(0, len(files) - 1, per_folder).round().astype(int)
                files = [files[i] for i in idx]
            out.extend(files)
    if not out:
        raise FileNotFoundError(f"vsnystra.training: no images ({', '.join(IMAGE_SUFFIXES)}) under {list(roots)}")
    return out


def collect_sequences(roots: Sequence[Path], min_frames: int) -> list[list[Path]]:
    """Every folder under ``roots`` holding at least ``min_frames`` images is one sequence (frames sorted by name)."""
    seqs: list[list[Path]] = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"vsnystra.training: data folder {root} does not exist; pass --data <folder>")
        for folder in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
            files = list_images(folder)
            if len(files) >= min_frames:
                seqs.append(files)
    if not seqs:
        raise FileNotFoundError(
            f"vsnystra.training: no folder with >= {min_frames} frames under {list(roots)}; "
            "a video dataset is one sub-folder of frames per sequence"
        )
    return seqs


def _randint(high: int, gen: torch.Generator) -> int:
    return int(torch.randint(0, max(high, 1), (1,), generator=gen).item())


def augment(x: torch.Tensor, gen: torch.Generator, code: int | None = None) -> torch.Tensor:
    """Random horizontal/vertical flip and transpose of the last two axes (the 8 dihedral variants)."""
    if code is None:
        code = _randint(8, gen)
    if code & 1:
        x = x.flip(-1)
    if code & 2:
        x = x.flip(-2)
    if code & 4:
        x = x.transpose(-1, -2)
    return x


class ImagePatches:
    """Random (augmented) patches from images held in memory as uint8."""

    def __init__(self, files: Sequence[Path], min_side: int) -> None:
        self.images: list[torch.Tensor] = []
        for f in files:
            img = read_image(f)
            if min(img.shape[-2:]) >= min_side:
                self.images.append(img)
        if not self.images:
            raise ValueError(f"vsnystra.training: no training image has both sides >= {min_side} px")
        log.info("loaded %d images for training", len(self.images))

    def sample(self, batch: int, size: int, gen: torch.Generator) -> torch.Tensor:
        """(batch, 3, size, size) float32 in [0, 1]."""
        out = []
        for _ in range(batch):
            img = self.images[_randint(len(self.images), gen)]
            h, w = img.shape[-2:]
            y, x = _randint(h - size + 1, gen), _randint(w - size + 1, gen)
            out.append(augment(img[:, y : y + size, x : x + size], gen))
        return torch.stack(out).float() / 255.0


class SRPairs:
    """Aligned (LR, HR) patches: every HR image is cropped to a multiple of ``scale`` and downscaled once with
    MATLAB-compatible bicubic rounded to 8 bits (exactly how the benchmark LR files were made)."""

    def __init__(self, files: Sequence[Path], scale: int, min_lr_side: int) -> None:
        from vsnystra.training.degrade import imresize

        self.scale = scale
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        for f in files:
            hr = read_image(f)
            h, w = (hr.shape[-2] // scale) * scale, (hr.shape[-1] // scale) * scale
            if min(h, w) // scale < min_lr_side:
                continue
            hr = hr[:, :h, :w].contiguous()
            lr = imresize(hr.double() / 255.0, 1.0 / scale, uint8=True)
            self.pairs.append(((lr * 255.0).round().to(torch.uint8), hr))
        if not self.pairs:
            raise ValueError(f"vsnystra.training: no training image has LR sides >= {min_lr_side} px")
        log.info("prepared %d LR/HR pairs (x%d)", len(self.pairs), scale)

    def sample(self, batch: int, lr_size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(lr (batch, 3, s, s), hr (batch, 3, s*scale, s*scale)) float32 in [0, 1]."""
        lrs, hrs = [], []
        s = self.scale
        for _ in range(batch):
            lr, hr = self.pairs[_randint(len(self.pairs), gen)]
            h, w = lr.shape[-2:]
            y, x = _randint(h - lr_size + 1, gen), _randint(w - lr_size + 1, gen)
            code = _randint(8, gen)
            lrs.append(augment(lr[:, y : y + lr_size, x : x + lr_size], gen, code))
            hrs.append(augment(hr[:, y * s : (y + lr_size) * s, x * s : (x + lr_size) * s], gen, code))
        return torch.stack(lrs).float() / 255.0, torch.stack(hrs).float() / 255.0


class ClipPatches:
    """Random short clips (T consecutive frames, same crop, random temporal direction) from frame sequences.

    Frames are decoded on demand (sequences are too large to hold in memory); decoding is cheap next to a step.
    """

    def __init__(self, sequences: Sequence[Sequence[Path]], frames: int) -> None:
        self.sequences = [list(s) for s in sequences if len(s) >= frames]
        self.frames = frames
        if not self.sequences:
            raise ValueError(f"vsnystra.training: no sequence has >= {frames} frames")

    def sample(self, batch: int, size: int, gen: torch.Generator) -> torch.Tensor:
        """(batch, T, 3, size, size) float32 in [0, 1]."""
        out = []
        for _ in range(batch):
            seq = self.sequences[_randint(len(self.sequences), gen)]
            start = _randint(len(seq) - self.frames + 1, gen)
            frames = torch.stack([read_image(p) for p in seq[start : start + self.frames]])
            h, w = frames.shape[-2:]
            y, x = _randint(h - size + 1, gen), _randint(w - size + 1, gen)
            clip = augment(frames[..., y : y + size, x : x + size], gen)
            if _randint(2, gen):
                clip = clip.flip(0)
            out.append(clip)
        return torch.stack(out).float() / 255.0
