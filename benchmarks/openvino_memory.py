"""Peak memory of one RVRT chunk through torch or through OpenVINO, each in its own process (VmHWM, Linux).

Why: backend="auto" keeps large RVRT chunks on torch (``openvino.AUTO_MAX_VIDEO_PIXELS``) because the exported
alignment holds every sampled key and value at once; this measures by how much. Run the three steps in order (the
second reads the graph the first exported, so it measures compile + run only):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/openvino_memory.py torch --side 480
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/openvino_memory.py export --side 480 --cache /tmp/ov-mem
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/openvino_memory.py openvino --side 480 --cache /tmp/ov-mem
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vsnystra.archs.base import AttentionConfig, RestorationModel  # noqa: E402
from vsnystra.attention.specs import Exact  # noqa: E402
from vsnystra.runtime.cache import ModelCache  # noqa: E402
from vsnystra.runtime.openvino import OpenVINOModel  # noqa: E402
from vsnystra.runtime.video import restore_chunk  # noqa: E402
from vsnystra.zoo import bundled_defaults, resolve_model  # noqa: E402


def peak_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("backend", choices=("torch", "export", "openvino"))
    p.add_argument("--model", default="rvrt-denoise-small")
    p.add_argument("--side", type=int, default=480, help="frame height and width (multiple of 8, >= 136)")
    p.add_argument("--cache", type=Path, default=Path("/tmp/vsnystra-ov-mem"), help="OpenVINO disk cache")
    args = p.parse_args()
    torch.set_num_threads(1)
    path = resolve_model(args.model)
    frames = bundled_defaults(path).get("chunk", 16)
    assert isinstance(frames, int)
    model = ModelCache().get(path, device=torch.device("cpu"), attention=AttentionConfig(spec=Exact()))
    assert isinstance(model, RestorationModel)
    clip = torch.rand(frames, 3, args.side, args.side, generator=torch.Generator().manual_seed(0))
    print(f"# {args.model}, {frames} x {args.side}², loaded: peak {peak_gib():.2f} GiB")
    net = model if args.backend == "torch" else OpenVINOModel(model, disk_cache=args.cache, frames=frames)
    if args.backend == "openvino" and not any(args.cache.glob("*/model.xml")):
        p.error(f"no exported graph in {args.cache}; run the 'export' step first")
    with torch.no_grad():
        for call in ("first", "second"):
            t = time.perf_counter()
            restore_chunk(net, clip, sigma=20.0)
            print(f"{args.backend} {call} call {time.perf_counter() - t:.1f} s, peak {peak_gib():.2f} GiB", flush=True)


if __name__ == "__main__":
    main()
