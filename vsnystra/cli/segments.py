"""The segment planner every executor of ``vsnystra restore`` uses (in process or on a Ray cluster).

A file of ``n`` frames is cut into shots at scene changes and into segments of at most ``max_frames`` written
frames. A segment is a list of pieces, one per shot it touches; a piece *reads* more frames than it *writes*:

* Image models (no temporal context): a piece reads exactly what it writes; shots do not matter.
* RVRT: a shot is restored as ``restore_video`` restores a whole clip, with the chunks of
  ``runtime.video.chunk_plan(shot length, chunk, overlap)`` laid out from the shot's first frame and a frame's
  output the average of the chunks covering it. A piece writing frames ``[a, b)`` of a shot reads the union of the
  chunks that cover any of them. Fed those frames, ``restore_video`` lays out exactly those chunks again (they
  start at a chunk start and end at a chunk end, or at the shot's end), so every written frame is computed from
  the same chunks, blended in the same order, as in one pass over the shot: the frames are bit-identical.

Where a long shot is split, the cut is moved (by less than one chunk stride) to where the fewest chunks straddle
it, since those chunks are computed by both neighbouring segments. Short shots are packed into one segment up to
``max_frames``, so an archive of short clips still makes few, large segments.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Span = tuple[int, int]  # [start, end) in frame numbers of the input
Temporal = tuple[int, int] | None  # (chunk, overlap) of a video model (chunk 0: a whole shot at once); None: image

PLAN_VERSION = 1
DEFAULT_SEGMENT_FRAMES = 600  # see benchmarks/results/cluster.md
DEFAULT_SCENE_THRESHOLD = 0.1  # VapourSynth misc.SCDetect's default (see cli/scan.py)


@dataclass(frozen=True)
class Piece:
    """Frames of one shot that a segment restores: ``read`` is fed to the model, ``write`` is kept."""

    shot: Span
    read: Span
    write: Span


@dataclass(frozen=True)
class Segment:
    index: int
    pieces: tuple[Piece, ...]

    @property
    def read(self) -> Span:
        return self.pieces[0].read[0], self.pieces[-1].read[1]

    @property
    def write(self) -> Span:
        return self.pieces[0].write[0], self.pieces[-1].write[1]

    @property
    def frames(self) -> int:
        a, b = self.write
        return b - a

    @property
    def name(self) -> str:
        return f"seg-{self.index:05d}"


def shots(num_frames: int, cuts: Iterable[int]) -> list[Span]:
    """The shots of a clip: ``cuts`` are the first frames of new shots (0 and out-of-range values are ignored)."""
    starts = [0, *sorted({c for c in cuts if 0 < c < num_frames})]
    return [(s, e) for s, e in zip(starts, [*starts[1:], num_frames], strict=True)]


def chunk_spans(shot: Span, temporal: Temporal) -> list[Span]:
    """The model's chunks over ``shot`` in absolute frame numbers (one span = the whole shot for image models)."""
    s, e = shot
    if temporal is None or not temporal[0]:
        return [shot]
    from vsnystra.runtime.video import chunk_plan  # imports torch: not at module import (the CLI's parser)

    chunk, overlap = temporal
    return [(s + a, s + b) for a, b in chunk_plan(e - s, chunk, overlap)]


def read_span(shot: Span, write: Span, temporal: Temporal) -> Span:
    """Frames to feed the model so that the frames of ``write`` come out exactly as in one pass over ``shot``."""
    if temporal is None:
        return write
    a, b = write
    covering = [(s, e) for s, e in chunk_spans(shot, temporal) if s < b and e > a]
    return min(s for s, _ in covering), max(e for _, e in covering)


def straddling(spans: Sequence[Span], cut: int) -> int:
    """How many chunks contain both frame ``cut - 1`` and frame ``cut`` (computed on both sides of the cut)."""
    return sum(1 for s, e in spans if s < cut < e)


def split_shot(shot: Span, max_frames: int, temporal: Temporal) -> list[Span]:
    """Write ranges of at most ``max_frames`` frames covering ``shot``, cut where the fewest chunks straddle."""
    s, e = shot
    length = e - s
    if length <= max_frames or (temporal is not None and not temporal[0]):
        return [shot]  # chunk 0 runs a shot at once: it cannot be split without changing its frames
    stride = 1 if temporal is None else max(1, temporal[0] - temporal[1])
    parts = -(-length // max_frames)
    slack = min(stride - 1, max_frames - -(-length // parts))  # how far back a cut may move within the limit
    spans = chunk_spans(shot, temporal)
    cuts: list[int] = []
    for k in range(1, parts):
        target = s + round(k * length / parts)
        lo = max(cuts[-1] + 1 if cuts else s + 1, target - slack)
        cuts.append(min(range(lo, target + 1), key=lambda c: (straddling(spans, c), target - c)))
    bounds = [s, *cuts, e]
    return list(itertools.pairwise(bounds))


def plan_segments(num_frames: int, cuts: Iterable[int], temporal: Temporal, max_frames: int) -> list[Segment]:
    """Cut ``num_frames`` frames into segments (see the module docstring); every frame is written exactly once."""
    if num_frames < 1:
        raise ValueError(f"vsnystra restore: nothing to plan, the input has {num_frames} frames")
    if max_frames < 1:
        raise ValueError(f"vsnystra restore: --segment-frames must be >= 1, got {max_frames}")
    clip_shots = shots(num_frames, cuts if temporal is not None else ())  # shots only matter to video models
    segments: list[list[Piece]] = []
    current: list[Piece] = []
    filled = 0
    for shot in clip_shots:
        writes = split_shot(shot, max_frames, temporal)
        if len(writes) > 1:  # a long shot: its parts are segments of their own
            if current:
                segments.append(current)
                current, filled = [], 0
            segments.extend([Piece(shot, read_span(shot, w, temporal), w)] for w in writes)
            continue
        if current and filled + (shot[1] - shot[0]) > max_frames:
            segments.append(current)
            current, filled = [], 0
        if temporal is None and current:  # image models: neighbouring shots are one piece
            prev = current.pop()
            merged = (prev.write[0], shot[1])
            current.append(Piece(merged, merged, merged))
        else:
            current.append(Piece(shot, read_span(shot, shot, temporal), shot))
        filled += shot[1] - shot[0]
    if current:
        segments.append(current)
    return [Segment(i, tuple(p)) for i, p in enumerate(segments)]


@dataclass
class FilePlan:
    """What the planning pass learnt about one input plus its segments; saved as ``plan.json`` for resuming."""

    fingerprint: str
    source: str
    frames: int
    temporal: Temporal
    segment_frames: int
    cuts: list[int]
    decode_pts: list[int | None]  # pts of each decoded frame, in decode order (frame identity after a seek)
    out_pts: list[int]  # pts each frame gets in the output (vsnystra restore's rule for missing/repeated pts)
    checksums: list[int] | None  # crc32 of each decoded frame's planes (None: the pixel format has no ndarray view)
    seekable: bool  # decode pts unique and increasing: a worker may seek instead of decoding from the start
    segments: list[Segment] = field(default_factory=list)
    version: int = PLAN_VERSION
    expected: int | None = None  # frames the container says it holds (its count, else duration x rate)
    decode_errors: int = 0  # packets the decoder refused (skipped; their frames are missing)
    exact: bool = False  # ``expected`` is the container's frame count, not an estimate from the duration
    deinterlace: str = ""  # "frame"/"field": frames are bwdif's output; "field" makes two of every decoded frame
    decoded: int | None = None  # frames decoded (``frames`` counts the deinterlaced ones); None: ``frames``

    def damage(self) -> str | None:
        """What is missing from the input, or None: a truncated or damaged file is reported, never silently cut."""
        frames = self.frames if self.decoded is None else self.decoded
        missing = 0 if self.expected is None else self.expected - frames
        tolerance = 0 if self.exact else max(1, self.expected // 50 if self.expected else 0)
        if self.decode_errors == 0 and missing <= tolerance:
            return None
        what = f"{self.decode_errors} decode errors" if self.decode_errors else "no decode errors"
        if self.expected is not None and missing > 0:
            kind = "frame count" if self.exact else "duration"
            return f"{frames} of {self.expected} frames decodable (by the container's {kind}; {what})"
        return f"{frames} frames decodable, {what}"

    def to_json(self) -> str:
        d: dict[str, Any] = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "segments"}
        d["segments"] = [[[p.shot, p.read, p.write] for p in seg.pieces] for seg in self.segments]
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> FilePlan:
        d = json.loads(text)
        if d.get("version") != PLAN_VERSION:
            raise ValueError(f"plan version {d.get('version')} is not {PLAN_VERSION}")
        segs = d.pop("segments")
        d["temporal"] = tuple(d["temporal"]) if d["temporal"] is not None else None
        plan = cls(**d)

        def span(v: Sequence[int]) -> Span:
            return int(v[0]), int(v[1])

        plan.segments = [
            Segment(i, tuple(Piece(span(sh), span(r), span(w)) for sh, r, w in pieces)) for i, pieces in enumerate(segs)
        ]
        return plan
