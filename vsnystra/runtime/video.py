"""restore_video: RVRT's official test procedure (``main_test_rvrt.py`` test_video / test_clip), memory-bounded.

Temporal chunks (``chunk`` frames, ``chunk_overlap`` shared): starts ``range(0, T - chunk, chunk - overlap)`` plus
``max(0, T - chunk)``; a frame covered by several chunks is the plain average of their outputs. A chunk with an odd
frame count is extended by its time-mirrored last frame (RVRT works on 2-frame clips) and cropped back.
Spatial tiles (``tile`` px, ``tile_overlap`` px): same start rule; for every tile edge that is not an image border
the outer ``tile_overlap // 2`` OUTPUT pixels are dropped before averaging. Without tiles the frame is mirror-padded
to a multiple of 8 and cropped (the official whole-frame rule); tiles are padded the same way only when needed.
Non-blind denoisers (``model.info.needs_sigma``) get the constant sigma/255 map as a 4th channel.

Computing one chunk on demand (the VapourSynth filter does this, frame by frame), identical to restore_video::

    plan = chunk_plan(num_frames, chunk, overlap)          # [(start, end), ...]
    for k in chunks_covering(plan, n):                     # chunks holding frame n, in plan order
        out_k = restore_chunk(model, frames[plan[k][0]:plan[k][1]], tile=..., tile_overlap=..., sigma=...)
    frame_n = blend([out_k[n - plan[k][0]] for k in chunks_covering(plan, n)])   # plain average

Memory is bounded by the chunk and tile sizes: restore_video keeps at most about two chunks of frames alive.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn

from vsnystra.archs.base import ModelInfo, model_info

log = logging.getLogger(__name__)

DEFAULT_CHUNK = 16
DEFAULT_CHUNK_OVERLAP = 2
DEFAULT_TILE_OVERLAP = 20
Tile = int | tuple[int, int] | list[int] | None


def chunk_plan(num_frames: int, chunk: int | None, overlap: int = 2) -> list[tuple[int, int]]:
    """Temporal chunks (start, end) of the official test: stride chunk - overlap, last chunk flush with the end."""
    if num_frames < 1:
        raise ValueError(f"chunk_plan: need at least one frame, got {num_frames}")
    if not chunk or chunk >= num_frames:
        return [(0, num_frames)]
    _check_chunk(chunk, overlap)
    starts = [*range(0, num_frames - chunk, chunk - overlap), max(0, num_frames - chunk)]
    return [(s, s + chunk) for s in starts]


def chunks_covering(plan: Sequence[tuple[int, int]], frame: int) -> list[int]:
    """Indices of the chunks of ``plan`` that contain ``frame``, in plan order."""
    return [k for k, (s, e) in enumerate(plan) if s <= frame < e]


def blend(outputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Average of one frame's outputs from the chunks covering it (summed in plan order, as upstream)."""
    acc = outputs[0].clone()
    for o in outputs[1:]:
        acc.add_(o)
    return acc.div_(len(outputs)) if len(outputs) > 1 else acc


def _check_chunk(chunk: int, overlap: int) -> None:
    if chunk < 2:
        raise ValueError(f"restore_video: chunk must be >= 2 frames (RVRT works on 2-frame clips), got {chunk}")
    if not 0 <= overlap < chunk:
        raise ValueError(f"restore_video: chunk_overlap must be in [0, chunk), got {overlap} for chunk {chunk}")


def _mirror_pad(x: torch.Tensor, dim: int, multiple: int) -> tuple[torch.Tensor, int]:
    """Append the mirrored tail (edge included) along ``dim`` up to a multiple; returns (padded, original size)."""
    n = x.shape[dim]
    pad = (multiple - n % multiple) % multiple
    if not pad:
        return x, n
    idx = torch.arange(n + pad, device=x.device) % (2 * n)
    idx = torch.where(idx < n, idx, 2 * n - 1 - idx)
    return x.index_select(dim, idx), n


def _video_info(model: nn.Module) -> ModelInfo:
    info = model_info(model, "restore_video")
    if info.kind != "video":
        raise TypeError(f"restore_video: {info.arch} is an {info.kind} model; use vsnystra.restore_image")
    return info


def _forward_padded(model: nn.Module, x: torch.Tensor, scale: int, multiple: int) -> torch.Tensor:
    """x (t, c, h, w): pad time to even and space to ``multiple`` by mirroring, run, crop."""
    x, t = _mirror_pad(x, 0, 2)
    x, h = _mirror_pad(x, 2, multiple)
    x, w = _mirror_pad(x, 3, multiple)
    y = model(x.unsqueeze(0))[0]
    return y[:t, :, : h * scale, : w * scale]


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    return [*range(0, length - tile, tile - overlap), max(0, length - tile)]


def _normalise_tile(tile: Tile) -> tuple[int, int] | None:
    """(h, w) from ``tile``: an int, or (w, h) like restore_image and the filters."""
    if tile is None or tile == 0:
        return None
    tw, th = (tile, tile) if isinstance(tile, int) else (int(tile[0]), int(tile[1]))
    if th <= 0 or tw <= 0 or th % 8 or tw % 8:
        raise ValueError(f"restore_video: tile must be a positive multiple of 8 (the window), got {tile}")
    return th, tw


def restore_chunk(
    model: nn.Module,
    frames: torch.Tensor,
    *,
    tile: Tile = None,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
    sigma: float | None = None,
) -> torch.Tensor:
    """Restore one temporal chunk ``frames`` (t, 3, h, w) -> (t, 3, s*h, s*w) on the model's device and dtype."""
    info = _video_info(model)
    p = next(model.parameters())
    device, dtype, scale = p.device, p.dtype, info.scale
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"restore_video: frames must be (T, 3, H, W), got {tuple(frames.shape)}")
    x = frames.to(device=device, dtype=dtype)
    if info.needs_sigma:
        if sigma is None:
            raise ValueError("restore_video: this RVRT is a non-blind denoiser; pass sigma=<noise level, 0..255>")
        x = torch.cat([x, x.new_full((x.shape[0], 1, *x.shape[2:]), float(sigma) / 255.0)], dim=1)
    elif sigma is not None:
        raise ValueError("restore_video: sigma is only for non-blind denoisers (model.info.needs_sigma); drop it")
    t, _, h, w = x.shape
    tiles = _normalise_tile(tile)
    multiple = info.size_rule.multiple_of
    with torch.no_grad():
        if tiles is None:
            return _forward_padded(model, x, scale, multiple)
        if not 0 <= tile_overlap < min(tiles):
            raise ValueError(f"restore_video: tile_overlap must be in [0, tile), got {tile_overlap} for tile {tile}")
        th, tw = min(tiles[0], h), min(tiles[1], w)
        hs = _tile_starts(h, th, tile_overlap)
        ws = _tile_starts(w, tw, tile_overlap)
        out = torch.zeros(t, 3, h * scale, w * scale, device=device, dtype=torch.float32)
        weight = torch.zeros(1, 1, h * scale, w * scale, device=device, dtype=torch.float32)
        trim = tile_overlap // 2
        for y0 in hs:
            for x0 in ws:
                patch = _forward_padded(model, x[:, :, y0 : y0 + th, x0 : x0 + tw], scale, multiple).float()
                m = torch.ones(1, 1, *patch.shape[-2:], device=device)
                if trim:
                    if y0 < hs[-1]:
                        m[..., -trim:, :] = 0
                    if x0 < ws[-1]:
                        m[..., :, -trim:] = 0
                    if y0 > hs[0]:
                        m[..., :trim, :] = 0
                    if x0 > ws[0]:
                        m[..., :, :trim] = 0
                ys = slice(y0 * scale, (y0 + th) * scale)
                xs = slice(x0 * scale, (x0 + tw) * scale)
                out[..., ys, xs].add_(patch * m)
                weight[..., ys, xs].add_(m)
        return out.div_(weight).to(dtype)


def _restore_stream(
    model: nn.Module,
    frames: Iterable[torch.Tensor],
    chunk: int | None,
    overlap: int,
    tile: Tile,
    tile_overlap: int,
    sigma: float | None,
) -> Iterator[torch.Tensor]:
    """Lazy restore of a frame stream; same chunks and blending as chunk_plan/blend on the full length."""
    it = iter(frames)
    buf: dict[int, torch.Tensor] = {}  # input frames still needed
    done: dict[int, list[torch.Tensor]] = {}  # outputs gathered per pending frame
    read = 0
    exhausted = False
    emitted = 0
    out_device = None

    def fill(upto: int) -> None:
        nonlocal read, exhausted, out_device
        while not exhausted and read < upto:
            try:
                f = next(it)
            except StopIteration:
                exhausted = True
                break
            if f.dim() != 3:
                raise ValueError(f"restore_video: frames must be (C, H, W) tensors, got {tuple(f.shape)}")
            out_device = out_device or f.device
            buf[read] = f
            read += 1

    def run(s: int, e: int) -> None:
        y = restore_chunk(
            model, torch.stack([buf[i] for i in range(s, e)]), tile=tile, tile_overlap=tile_overlap, sigma=sigma
        )
        for i in range(s, e):
            done.setdefault(i, []).append(y[i - s])

    def emit(upto: int) -> Iterator[torch.Tensor]:
        nonlocal emitted
        while emitted < upto:
            outs = done.pop(emitted)
            yield blend(outs).to(out_device)
            emitted += 1

    if chunk:
        _check_chunk(chunk, overlap)
        stride = chunk - overlap
        s = 0
        while True:
            fill(s + chunk + 1)  # one extra frame tells whether s is a regular start (s < T - chunk)
            if exhausted and s >= read - chunk:
                break
            run(s, s + chunk)
            s += stride
            fill(s + chunk + 1)
            if not (exhausted and s >= read - chunk):
                yield from emit(s)  # s is a regular start: the final chunk starts after it, frames < s are final
                for i in [i for i in buf if i < s]:
                    del buf[i]
    fill(1 << 62)
    if read == 0:
        raise ValueError("restore_video: no frames")
    last = max(0, read - chunk) if chunk else 0
    run(last, read)
    yield from emit(read)


def restore_video(
    model: nn.Module,
    frames: torch.Tensor | Iterable[torch.Tensor],
    *,
    chunk: int | None = DEFAULT_CHUNK,
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    tile: Tile = None,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
    sigma: float | None = None,
) -> torch.Tensor | Iterator[torch.Tensor]:
    """Restore a video with RVRT: (T, 3, H, W) tensor -> (T, 3, sH, sW) tensor; iterable of frames -> iterator.

    chunk: frames per temporal chunk (None or 0: whole sequence at once); tile: spatial tile in input pixels
    (int or (w, h) like restore_image, multiples of 8; None: whole frame). Output is on the frames' device in the
    model's dtype.
    """
    needs_sigma = _video_info(model).needs_sigma
    if needs_sigma and sigma is None:
        raise ValueError("restore_video: this RVRT is a non-blind denoiser; pass sigma=<noise level, 0..255>")
    if not needs_sigma and sigma is not None:
        raise ValueError("restore_video: sigma is only for non-blind denoisers (model.info.needs_sigma); drop it")
    if chunk:
        _check_chunk(chunk, chunk_overlap)
    _normalise_tile(tile)
    if isinstance(frames, torch.Tensor):
        if frames.dim() != 4:
            raise ValueError(f"restore_video: frames must be (T, C, H, W), got {tuple(frames.shape)}")
        outs = list(_restore_stream(model, iter(frames), chunk, chunk_overlap, tile, tile_overlap, sigma))
        return torch.stack(outs)
    return _restore_stream(model, frames, chunk, chunk_overlap, tile, tile_overlap, sigma)
