"""RVRT's temporal buffering inside VapourSynth: scene-bounded segments, deterministic chunks, a bounded LRU.

Why it is built this way:
* Output frame n needs a chunk of input frames. Chunk boundaries depend only on n, the clip length and the scene
  cuts (a segment is a run of frames between cuts; chunks are laid out from the segment start with the official
  rule), so random access, any request order and any number of threads give the same frames.
* Chunk plan and blending are runtime.video's (``chunk_plan``, ``blend``), so a frame equals restore_video's.
* Each chunk is computed once: a per-chunk lock makes concurrent requests for the same chunk wait for the first
  one; results sit in an LRU of ``capacity`` chunks, so memory stays bounded (an evicted chunk is recomputed,
  bit-identically, if it is needed again).
* Scene cuts (``_SceneChangePrev`` on the first frame of a shot, ``_SceneChangeNext`` on the last one) end a
  segment, so the recurrence never mixes two shots. Props are read lazily, only as far as a request needs: back to
  the segment start and at most ``chunk`` frames ahead; what was read is remembered.
* Source frames are fetched with ``get_frame`` from inside the frame callback, one chunk at a time, while holding
  only that chunk's lock (never two locks at once), which VapourSynth supports with any number of threads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial

import torch
import vapoursynth as vs

from vsnystra.lru import LRU
from vsnystra.runtime.video import blend as average
from vsnystra.runtime.video import chunk_plan

log = logging.getLogger(__name__)

Span = tuple[int, int]  # [start, end) in clip frame numbers
ChunkRunner = Callable[[torch.Tensor], torch.Tensor]  # (T, C, H, W) -> (T, C, sH, sW)
FrameLoader = Callable[[Sequence[vs.VideoFrame]], torch.Tensor]  # frames -> (T, C, H, W)
PlanFn = Callable[[int, int, int], list[Span]]  # (length, chunk, overlap) -> chunk spans relative to 0
BlendFn = Callable[[Sequence[torch.Tensor]], torch.Tensor]  # one frame's outputs, in plan order -> the frame


class SceneCuts:
    """Lazy, cached scene-cut lookup on a clip's frame properties."""

    _KNOWN, _PREV, _NEXT = 1, 2, 4

    def __init__(self, clip: vs.VideoNode, *, enabled: bool = True) -> None:
        self.clip = clip
        self.length = clip.num_frames
        self.enabled = enabled
        self._flags = bytearray(self.length)
        self._start = [-1] * self.length  # memoised segment start per frame (-1: unknown)
        self.reads = 0  # number of frames whose props were read (tests check the laziness)

    def _read(self, i: int) -> int:
        flags = self._flags[i]
        if not flags & self._KNOWN:
            props = self.clip.get_frame(i).props
            flags = self._KNOWN
            if int(props.get("_SceneChangePrev", 0) or 0):
                flags |= self._PREV
            if int(props.get("_SceneChangeNext", 0) or 0):
                flags |= self._NEXT
            self._flags[i] = flags
            self.reads += 1
        return flags

    def cut_before(self, i: int) -> bool:
        """True when frames i - 1 and i belong to different shots."""
        if not self.enabled or i <= 0 or i >= self.length:
            return False
        return bool(self._read(i) & self._PREV) or bool(self._read(i - 1) & self._NEXT)

    def segment_start(self, n: int) -> int:
        i = n
        while i > 0 and self._start[i] < 0 and not self.cut_before(i):
            i -= 1
        start = self._start[i] if self._start[i] >= 0 else i
        for j in range(i, n + 1):
            self._start[j] = start
        return start

    def segment_end_within(self, n: int, horizon: int) -> int | None:
        """End (exclusive) of n's segment if it lies within n + horizon frames (or is the clip end), else None."""
        last = min(self.length, n + horizon + 1)
        for i in range(n + 1, last):
            if self.cut_before(i):
                return i
        return self.length if last >= self.length else None


class ChunkCache:
    """LRU of chunk results; each chunk is computed once even when several threads ask for it at once."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"ChunkCache: capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._results: LRU[Span, torch.Tensor] = LRU(capacity)
        self.computed: list[Span] = []  # every computation, in order (tests check "once")

    def get(self, span: Span, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        def record() -> torch.Tensor:
            result = compute()
            self.computed.append(span)
            return result

        return self._results.get_or_create(span, record)

    def __len__(self) -> int:
        return len(self._results)


class TemporalRestorer:
    """Output frame n of a video model run chunk by chunk over scene-bounded segments of ``clip``."""

    def __init__(
        self,
        clip: vs.VideoNode,
        *,
        runner: ChunkRunner,
        loader: FrameLoader,
        chunk: int,
        overlap: int,
        capacity: int,
        plan: PlanFn = chunk_plan,
        blend: BlendFn = average,
        scene_cuts: bool = True,
    ) -> None:
        self.clip = clip
        self.runner = runner
        self.loader = loader
        self.chunk = chunk
        self.overlap = overlap
        self.plan = plan
        self.blend = blend
        self.cuts = SceneCuts(clip, enabled=scene_cuts)
        self.cache = ChunkCache(capacity)

    def segment(self, n: int) -> tuple[int, int | None]:
        """(start, end or None when the end lies beyond the look-ahead) of n's segment."""
        start = self.cuts.segment_start(n)
        end = self.cuts.segment_end_within(n, max(self.chunk, 1))
        return start, end

    def spans_for(self, n: int) -> list[Span]:
        """The chunks (absolute spans, in plan order) whose outputs cover frame n."""
        start, end = self.segment(n)
        if end is None:
            # the segment goes on past n + chunk: lay the plan over a length long enough to hold every chunk that
            # can cover n; chunks that end within that length are the same as in the full segment's plan
            length = n - start + 2 * self.chunk + 1
            spans = [(a, b) for a, b in self.plan(length, self.chunk, self.overlap) if b < length]
        else:
            spans = self.plan(end - start, self.chunk, self.overlap)
        rel = n - start
        return [(start + a, start + b) for a, b in spans if a <= rel < b]

    def _compute(self, span: Span) -> torch.Tensor:
        a, b = span
        log.debug("RVRT chunk [%d, %d)", a, b)
        frames = [self.clip.get_frame(i) for i in range(a, b)]
        out = self.runner(self.loader(frames))
        if out.shape[0] != b - a:
            raise RuntimeError(f"RVRT chunk [{a}, {b}) returned {out.shape[0]} frames instead of {b - a}")
        return out

    def frame(self, n: int) -> torch.Tensor:
        """(C, sH, sW) output frame n: the outputs of the chunks covering n, blended in plan order."""
        spans = self.spans_for(n)
        if not spans:
            raise RuntimeError(f"RVRT: no chunk covers frame {n} (chunk={self.chunk}, overlap={self.overlap})")
        outs = [self.cache.get(span, partial(self._compute, span))[n - span[0]] for span in spans]
        return outs[0] if len(outs) == 1 else self.blend(outs)
