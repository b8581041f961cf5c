"""``vsnystra export MODEL -o FILE.onnx --size HxW``: ONNX for one fixed input size, checked against eager."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from vsnystra.archs.patch import patch_attention
from vsnystra.archs.registry import load_model
from vsnystra.attention.specs import Exact
from vsnystra.runtime.export import ExportError, export_onnx
from vsnystra.zoo import resolve_model

log = logging.getLogger("vsnystra.cli")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def parse_size(text: str) -> tuple[int, int]:
    """ "128x96" (H x W) or "128" -> (H, W)."""
    parts = [p for p in re.split(r"[x,]", text.strip().lower()) if p]
    if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        raise ExportError(f"vsnystra export: --size must be HxW such as 128x128, got {text!r}")
    h = int(parts[0])
    return (h, int(parts[-1]))


def export_command(model: str, output: Path, size: str, opset: int) -> int:
    """Load ``model`` with exact attention, export it, log the largest difference from eager."""
    try:
        hw = parse_size(size)
        path = resolve_model(model)
        net = load_model(str(path))
        patch_attention(net, Exact())  # PnP-Nystra reads data (guards, mask analysis): exported models are exact
        diff = export_onnx(net, output, hw, opset=opset)
    except (ExportError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    log.info(
        "vsnystra export: wrote %s (input 1x%dx%dx%d); max |onnx - eager| = %.3g",
        output,
        net.info.in_channels,
        hw[0],
        hw[1],
        diff,
    )
    return EXIT_FAILED if diff >= 1e-4 else EXIT_OK  # NaN: unchecked (no onnxruntime)
