"""``vsnystra export MODEL -o FILE.onnx --size HxW [--frames T] [--sigma S]``: ONNX for one fixed input size,
checked against eager by every installed runtime (onnxruntime, OpenVINO)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from vsnystra.archs.patch import patch_attention
from vsnystra.archs.registry import load_model
from vsnystra.runtime.export import ExportError, export_onnx
from vsnystra.runtime.settings import SettingsError, attention_spec
from vsnystra.zoo import resolve_model

log = logging.getLogger("vsnystra.cli")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
TOLERANCE = 1e-4  # fp32 runtimes against eager


def parse_size(text: str) -> tuple[int, int]:
    """ "128x96" (H x W) or "128" -> (H, W)."""
    parts = [p for p in re.split(r"[x,]", text.strip().lower()) if p]
    if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        raise ExportError(f"vsnystra export: --size must be HxW such as 128x128, got {text!r}")
    h = int(parts[0])
    return (h, int(parts[-1]))


def export_command(
    model: str,
    output: Path,
    size: str,
    opset: int,
    frames: int | None = None,
    sigma: float | None = None,
    attention: str = "exact",
) -> int:
    """Load ``model`` with ``attention`` (PnP-Nystra at its trained-window defaults for "nystra"/"auto"), export
    it, log the largest difference from eager per runtime."""
    try:
        hw = parse_size(size)
        path = resolve_model(model)
        net = load_model(str(path))
        spec = attention_spec(attention, None, None, net.info.arch, caller="vsnystra export")
        patch_attention(net, spec)
        diffs = export_onnx(net, output, hw, frames=frames, sigma=sigma, opset=opset)
    except (ExportError, SettingsError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    shape = f"{hw[0]}x{hw[1]}" + (f", {frames} frames" if frames else "") + (f", sigma {sigma:g}" if sigma else "")
    log.info(
        "vsnystra export: wrote %s (%s %s, %s attention, input %s)",
        output,
        net.info.arch,
        net.info.variant,
        spec,
        shape,
    )
    if diffs:
        found = ", ".join(f"{d:.3g} ({runtime})" for runtime, d in diffs.items())
        log.info("vsnystra export: max |onnx - eager| = %s", found)
    bad = [r for r, d in diffs.items() if not d < TOLERANCE]
    if bad:
        log.error("vsnystra export: %s differ from eager by more than %g", ", ".join(bad), TOLERANCE)
    return EXIT_FAILED if bad else EXIT_OK
