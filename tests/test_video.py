"""restore_video (chunks, tiles, odd frame counts, iterators) and the pure-PyTorch guided deformable attention."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vsnystra.archs.base import ModelInfo, RestorationModel, SizeRule
from vsnystra.archs.rvrt_gda import deform_attn
from vsnystra.runtime.video import _normalise_tile, blend, chunk_plan, chunks_covering, restore_chunk, restore_video

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CKPT = SHARED / "fixtures" / "parity" / "rvrt_denoise_small.pth"
VID4 = SHARED / "data" / "video" / "Vid4" / "city"


# -- chunk plan and blending, on a cheap temporally non-local stand-in -------------------------------------
_RULE = SizeRule(multiple_of=8, padding="mirror_to")
_INFO = ModelInfo(
    arch="rvrt",
    kind="video",
    variant="stand_in",
    task="denoise",
    scale=2,
    in_channels=3,
    out_channels=3,
    window=(2, 8, 8),
    size_rule=_RULE,
    needs_sigma=True,
)


class _StandIn(RestorationModel):
    """Upscales x2 and adds the mean over the whole clip: chunking visibly changes its output."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.5))
        self.info = _INFO
        self.calls: list[tuple[int, ...]] = []

    def size_rule(self) -> SizeRule:
        return _RULE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        assert x.shape[1] % 2 == 0 and x.shape[-1] % 8 == 0 and x.shape[-2] % 8 == 0
        y = x[:, :, :3] + self.w * x[:, :, :3].mean(dim=1, keepdim=True) + x[:, :, 3:]
        return torch.nn.functional.interpolate(y.flatten(0, 1), scale_factor=2).unflatten(0, x.shape[:2])


def _upstream_test_video(model: nn.Module, lq: torch.Tensor, chunk: int, overlap: int, sigma: float) -> torch.Tensor:
    """Independent transcription of main_test_rvrt.py test_video (tile[0] > 0, whole frames) in numpy."""
    d, _, h, w = lq.shape
    e = np.zeros((d, 3, 2 * h, 2 * w))
    cnt = np.zeros((d, 1, 1, 1))
    for s in [*range(0, d - chunk, chunk - overlap), max(0, d - chunk)]:
        clip = lq[s : s + chunk]
        n = clip.shape[0]
        if n % 2:
            clip = torch.cat([clip, clip[-1:]])
        clip = torch.cat([clip, torch.full_like(clip[:, :1], sigma / 255)], 1)
        out = model(clip.unsqueeze(0))[0][:n].detach().numpy()
        e[s : s + n] += out
        cnt[s : s + n] += 1
    return torch.from_numpy(e / cnt).float()


def test_chunk_plan_follows_the_official_rule() -> None:
    assert chunk_plan(10, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10)]
    assert chunk_plan(7, 4, 2) == [(0, 4), (2, 6), (3, 7)]
    assert chunk_plan(3, 4, 2) == [(0, 3)]
    assert chunk_plan(9, None) == [(0, 9)]
    assert chunks_covering(chunk_plan(7, 4, 2), 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="chunk_overlap"):
        chunk_plan(10, 4, 4)


@pytest.mark.parametrize("frames", [7, 6, 1])
def test_chunks_blend_like_upstream_and_on_demand(frames: int) -> None:
    torch.manual_seed(0)
    model = _StandIn()
    lq = torch.rand(frames, 3, 16, 24)
    ref = _upstream_test_video(model, lq, 4, 2, 15.0)
    with torch.no_grad():
        out = restore_video(model, lq, chunk=4, chunk_overlap=2, sigma=15)
        streamed = torch.stack(list(restore_video(model, iter(lq), chunk=4, chunk_overlap=2, sigma=15)))
        plan = chunk_plan(frames, 4, 2)
        per_chunk = [restore_chunk(model, lq[s:e], sigma=15) for s, e in plan]
        on_demand = torch.stack(
            [blend([per_chunk[k][f - plan[k][0]] for k in chunks_covering(plan, f)]) for f in range(frames)]
        )
    assert isinstance(out, torch.Tensor) and out.shape == (frames, 3, 32, 48)
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.equal(out, streamed) and torch.equal(out, on_demand)
    if frames > 4:  # chunking matters for this stand-in, so a wrong blend could not pass
        whole = restore_video(model, lq, chunk=None, sigma=15)
        assert (whole - out).abs().max() > 1e-3


def test_stream_is_lazy() -> None:
    model = _StandIn()
    pulled = []

    def source():  # type: ignore[no-untyped-def]
        for i in range(40):
            pulled.append(i)
            yield torch.rand(3, 8, 8)

    it = restore_video(model, source(), chunk=6, chunk_overlap=2, sigma=5)
    first = next(it)  # type: ignore[call-overload]
    assert first.shape == (3, 16, 16)
    assert len(pulled) < 20


def test_sigma_rules() -> None:
    model = _StandIn()
    with pytest.raises(ValueError, match="sigma"):
        restore_video(model, torch.rand(4, 3, 8, 8))
    with pytest.raises(ValueError, match="multiple of 8"):
        restore_video(model, torch.rand(4, 3, 8, 8), sigma=5, tile=12)


# -- the real model on Vid4 frames ------------------------------------------------------------------------
def test_tile_is_width_then_height_like_restore_image() -> None:
    assert _normalise_tile((64, 32)) == (32, 64)  # (w, h) in, (h, w) rows-first inside
    assert _normalise_tile(16) == (16, 16)
    with pytest.raises(ValueError, match="multiple of 8"):
        _normalise_tile((64, 30))


def _vid4(n: int) -> torch.Tensor:
    from PIL import Image

    frames = []
    for i in range(1, n + 1):
        a = np.asarray(Image.open(VID4 / f"Frame {i:03d}.png").convert("RGB"))[200:336, 300:500]
        frames.append(torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255)
    return torch.stack(frames)


@pytest.mark.skipif(not CKPT.exists() or not VID4.is_dir(), reason="shared fixtures/data not available")
def test_chunked_tiled_stream_matches_single_pass_on_vid4() -> None:
    """5 frames (odd), 136x200 crop: chunks of 4 + 136-px tiles, fed as an iterator, vs one whole pass.

    The fixture checkpoint has random, strongly perturbed weights whose receptive field is far wider than any
    trained RVRT's (undamped, chunking moves outputs by up to 0.1). Damping the recurrent branch outputs and the
    shallow/reconstruction RSTB residuals by 0.05 / 0.02 restores trained-like locality, so 1/255 is meaningful.
    """
    from vsnystra import load_model

    sd = torch.load(CKPT, weights_only=True)["params"]
    for k in list(sd):
        recurrent = k.startswith("backbone.") and ".main.7." in k
        recurrent |= k.startswith("deform_align.") and ("proj.1." in k or "mlp.1.fc2" in k)
        if recurrent:
            sd[k] = sd[k] * 0.05
        if ".linear." in k and k.startswith(("feat_extract", "reconstruction")):
            sd[k] = sd[k] * 0.02
    model = load_model(sd)
    g = torch.Generator().manual_seed(0)
    clean = _vid4(5)
    noisy = clean + 25 / 255 * torch.randn(clean.shape, generator=g)
    whole = restore_video(model, noisy, chunk=None, sigma=25)
    assert isinstance(whole, torch.Tensor) and whole.shape == noisy.shape
    parts = restore_video(model, iter(noisy), chunk=4, chunk_overlap=2, tile=136, tile_overlap=40, sigma=25)
    streamed = torch.stack(list(parts))
    diff = (streamed - whole).abs().max().item()
    assert 0 < diff <= 1 / 255
    # denoising actually happened (the model is not an identity on the noisy input)
    assert (whole - noisy).abs().mean() > 1e-3


# -- guided deformable attention against a loop transcription of the CUDA kernel --------------------------
def _bilinear_dcn(img: torch.Tensor, y: float, x: float) -> float:
    h, w = img.shape
    if not (-1 < y < h and -1 < x < w):
        return 0.0
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    val = 0.0
    for yy, xx, wt in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx), (y0 + 1, x0, ly * (1 - lx))):
        if 0 <= yy < h and 0 <= xx < w:
            val += wt * float(img[yy, xx])
    if 0 <= y0 + 1 < h and 0 <= x0 + 1 < w:
        val += ly * lx * float(img[y0 + 1, x0 + 1])
    return val


def _gda_loop(q: torch.Tensor, kv: torch.Tensor, offset: torch.Tensor, heads: int, groups: int, clip: int):  # type: ignore[no-untyped-def]
    bt, cq, h, w = q.shape
    d = cq // heads
    cg = 2 * cq // groups
    off = offset.view(bt, clip, groups, 9, 2, h, w)
    out = torch.zeros(bt, cq, h, w, dtype=torch.float64)
    for beta in range(bt):
        b, i = divmod(beta, clip)
        for m in range(heads):
            for y in range(h):
                for x in range(w):
                    logits, values = [], []
                    for n in range(clip):
                        src = kv[b, (i + n) % clip]
                        for k in range(9):
                            a, bb = divmod(k, 3)
                            key, val = [], []
                            for j in range(d):
                                for c, store in ((m * d + j, key), (cq + m * d + j, val)):
                                    g = c // cg
                                    dy, dx = off[beta, n, g, k, 0, y, x], off[beta, n, g, k, 1, y, x]
                                    store.append(_bilinear_dcn(src[c], y - 1 + a + float(dy), x - 1 + bb + float(dx)))
                            logits.append(
                                sum(float(q[beta, m * d + j, y, x]) * key[j] for j in range(d)) / math.sqrt(d)
                            )
                            values.append(val)
                    mx = max(logits)
                    e = [math.exp(v - mx) for v in logits]
                    s = sum(e)
                    for j in range(d):
                        out[beta, m * d + j, y, x] = sum(e[t] * values[t][j] for t in range(len(e))) / s
    return out


@pytest.mark.parametrize("max_elems", [1 << 20, 300])  # one band, and row-by-row bands
def test_gda_matches_loop_transcription(max_elems: int) -> None:
    g = torch.Generator().manual_seed(3)
    b, clip, heads, groups, cq, h, w = 1, 2, 2, 4, 8, 5, 6
    q = torch.randn(b * clip, cq, h, w, generator=g, dtype=torch.float64)
    kv = torch.randn(b, clip, 2 * cq, h, w, generator=g, dtype=torch.float64)
    offset = 2.5 * torch.randn(b * clip, clip * groups * 9 * 2, h, w, generator=g, dtype=torch.float64)
    offset[0, :4, 0, 0] = torch.tensor([-1.0, 0.0, 5.0, -6.0], dtype=torch.float64)  # exact image borders
    ours = deform_attn(q, kv, offset, heads=heads, groups=groups, clip=clip, max_elems=max_elems)
    ref = _gda_loop(q, kv, offset, heads, groups, clip)
    assert (ours - ref).abs().max().item() < 1e-12
    # keys and values of one head sit in different offset groups: moving a value group changes the output
    moved = offset.clone().view(b * clip, clip, groups, 9, 2, h, w)
    moved[:, :, groups // 2] += 0.7
    other = deform_attn(q, kv, moved.view_as(offset), heads=heads, groups=groups, clip=clip)
    assert (other - ours).abs().max().item() > 1e-3


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gda_cuda_matches_cpu() -> None:
    g = torch.Generator().manual_seed(4)
    q = torch.randn(2, 48, 20, 36, generator=g)
    kv = torch.randn(1, 2, 96, 20, 36, generator=g)
    offset = 4 * torch.randn(2, 2 * 12 * 9 * 2, 20, 36, generator=g)
    ref = deform_attn(q, kv, offset, heads=12, groups=12, clip=2)
    dev = deform_attn(q.cuda(), kv.cuda(), offset.cuda(), heads=12, groups=12, clip=2).cpu()
    assert (dev - ref).abs().max().item() < 1e-4
    half = deform_attn(q.cuda().half(), kv.cuda().half(), offset.cuda().half(), heads=12, groups=12, clip=2)
    assert half.dtype == torch.float16 and (half.float().cpu() - ref).abs().max().item() < 5e-2
