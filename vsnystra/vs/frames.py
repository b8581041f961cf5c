"""Frame <-> tensor conversion for float RGB/GRAY frames (RGBS/RGBH, GRAYS/GRAYH).

Why it is written this way: one copy per direction. Planes are read as numpy views (``np.asarray(frame[p])``,
which honours the row stride), stacked once into a contiguous array and wrapped with ``torch.from_numpy``; results
are written with ``np.copyto`` into a writable copy of a template frame that already has the output size/format.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import vapoursynth as vs


def frame_to_array(frame: vs.VideoFrame) -> np.ndarray:
    """(C, H, W) contiguous numpy copy of a frame's planes, in the frame's dtype (float32 or float16)."""
    planes = [np.asarray(frame[p]) for p in range(frame.format.num_planes)]
    return np.stack(planes)


def frame_to_tensor(
    frame: vs.VideoFrame, *, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """(C, H, W) tensor of a frame, moved/cast only when asked."""
    t = torch.from_numpy(frame_to_array(frame))
    if device is not None or dtype is not None:
        t = t.to(device=device, dtype=dtype, non_blocking=False)
    return t


def frames_to_tensor(
    frames: Sequence[vs.VideoFrame], *, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """(T, C, H, W) tensor of several frames of one clip."""
    if not frames:
        raise ValueError("frames_to_tensor: no frames given")
    t = torch.from_numpy(np.stack([frame_to_array(f) for f in frames]))
    if device is not None or dtype is not None:
        t = t.to(device=device, dtype=dtype)
    return t


def tensor_to_frame(
    tensor: torch.Tensor, template: vs.VideoFrame, *, props: Mapping[str, Any] | None = None
) -> vs.VideoFrame:
    """A new frame holding ``tensor`` (C, H, W); ``template`` gives the size and format (e.g. a BlankClip frame).

    ``props`` replace the template's properties (the source frame's properties are passed here so they survive).
    """
    fmt = template.format
    if tensor.dim() != 3 or tensor.shape[0] != fmt.num_planes:
        raise ValueError(
            f"tensor_to_frame: tensor of shape {tuple(tensor.shape)} does not fit a {fmt.name} frame "
            f"({fmt.num_planes} planes)"
        )
    if tuple(tensor.shape[1:]) != (template.height, template.width):
        raise ValueError(
            f"tensor_to_frame: tensor is {tensor.shape[2]}x{tensor.shape[1]}, the frame is "
            f"{template.width}x{template.height}"
        )
    np_dtype = np.float16 if fmt.bits_per_sample == 16 else np.float32
    torch_dtype = torch.float16 if np_dtype is np.float16 else torch.float32
    data = tensor.detach().to(device="cpu", dtype=torch_dtype).numpy()
    out = template.copy()
    for p in range(fmt.num_planes):
        np.copyto(np.asarray(out[p]), data[p])
    if props is not None:
        out_props = out.props
        out_props.clear()
        out_props.update(props)
    return out
