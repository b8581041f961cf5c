"""Join a file's segments without re-encoding and copy the source's other streams, as ``vsnystra restore`` does.

Every segment starts with a keyframe (each is its own encode) and all were encoded with the same settings; the
join checks that their codec parameters (extradata included) are identical, then remuxes their packets in order
into one stream. Presentation timestamps are the planned ones (each segment's ``pts_offset`` removed). Decode
timestamps are rebuilt for the joined stream: the k-th decode timestamp is the (k - d)-th smallest presentation
timestamp, with d the reorder depth the packets need, which is what an encoder with d frames of delay emits.
Audio, subtitle and data streams, tags and dispositions are copied from the source exactly as the single-pass
restore copies them (same streams, same order, interleaved by time).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from vsnystra.cli.pipeline import _copy_tags, _open_av_source
from vsnystra.cli.worker import output_timing

log = logging.getLogger(__name__)


def reorder_depth(pts: Sequence[int]) -> int:
    """Smallest d with sorted(pts)[k - d] <= pts[k] for every k: the decode delay a packet order needs."""
    rank = {p: r for r, p in enumerate(sorted(pts))}
    return max([0, *(k - rank[p] for k, p in enumerate(pts))])


def decode_timestamps(pts: Iterator[int], depth: int, step: int) -> Iterator[int]:
    """Decode timestamps for packets in decode order (see the module docstring); strictly increasing."""
    heap: list[int] = []
    first = 0
    for k, p in enumerate(pts):
        heapq.heappush(heap, p)
        if k == 0:
            first = p  # a stream starts with its first picture (a keyframe): the smallest pts
        if k < depth:
            yield first - (depth - k) * step
        else:
            yield heapq.heappop(heap)


def _frac(x: Any) -> Fraction:
    return Fraction(int(x.numerator), int(x.denominator))


def assemble(
    src: Path,
    segments: Sequence[Path],
    records: Sequence[dict[str, Any]],
    tmp: Path,
    container_format: str | None,
    check: Callable[[], None] | None = None,
    *,
    subtitles: bool = True,
    deinterlace: str = "",
) -> int:
    """Write ``tmp`` from the segment files (in order) and the source's other streams; returns the frame count.
    ``check`` is called once per video packet (it may raise to cancel); ``subtitles`` False leaves them out;
    ``deinterlace`` "" keeps the source's field order tag (an interlaced source restored as it is), "field" doubles
    the frame rate (``worker.output_timing``)."""
    depth = max(reorder_depth(r["packet_pts"]) for r in records)
    with av.open(str(src), "r") as inp, av.open(str(tmp), "w", format=container_format) as out:
        source = _open_av_source(inp, warn=False)
        source.rate, source.time_base = output_timing(source.rate, source.time_base, deinterlace)
        tb = source.time_base
        step = max(1, round(1 / (source.rate * tb)))
        with av.open(str(segments[0])) as first:
            template = first.streams.video[0]
            extradata = bytes(template.codec_context.extradata or b"")
            codec = template.codec_context.name
            pix_fmt = template.codec_context.pix_fmt
            vout = out.add_stream_from_template(template)
        vout.time_base = tb
        # NUT keeps no colour tags: set them as the single-pass encode does (media.add_video_stream)
        colour = source.colour.for_output(str(pix_fmt), source.size)
        ctx = vout.codec_context
        ctx.color_range, ctx.colorspace = colour.color_range, colour.colorspace
        ctx.color_primaries, ctx.color_trc = colour.color_primaries, colour.color_trc
        ctx.framerate = source.rate
        if not deinterlace:
            ctx.field_order = source.video_stream.codec_context.field_order
        if source.sample_aspect_ratio:
            ctx.sample_aspect_ratio = source.sample_aspect_ratio
        omap = {}
        source.copy_streams = [s for s in source.copy_streams if subtitles or s.type != "subtitle"]
        for s in source.copy_streams:
            omap[s.index] = out.add_stream_from_template(s)
            _copy_tags(s, omap[s.index])
        _copy_tags(source.video_stream, vout)
        _copy_tags(source.container, out)
        others = inp.demux(*source.copy_streams) if source.copy_streams else iter(())
        waiting: Any = None

        def mux_others(until: Fraction | None) -> None:
            nonlocal waiting
            while True:
                if waiting is None:
                    waiting = next(others, None)
                    if waiting is None:
                        return
                    if (waiting.dts is None and waiting.pts is None) or not waiting.size:
                        waiting = None
                        continue
                t = waiting.dts if waiting.dts is not None else waiting.pts
                if until is not None and waiting.time_base and t * waiting.time_base > until:
                    return
                waiting.stream = omap[waiting.stream.index]
                out.mux(waiting)
                waiting = None

        def packets() -> Iterator[tuple[Any, int]]:
            for path, rec in zip(segments, records, strict=True):
                with av.open(str(path)) as seg:
                    st = seg.streams.video[0]
                    if bytes(st.codec_context.extradata or b"") != extradata or st.codec_context.name != codec:
                        raise ValueError(
                            f"{path.name} was encoded with other codec parameters than {segments[0].name}; "
                            "segments join only without re-encoding: rerun with the same --codec/--crf/--preset "
                            "after deleting the work folder"
                        )
                    scale = _frac(st.time_base) / tb
                    offset = int(rec["pts_offset"])
                    for pkt in seg.demux(st):
                        if pkt.size:
                            if pkt.pts is None:
                                raise ValueError(f"{path.name}: a packet has no timestamp")
                            value = pkt.pts * scale - offset
                            if value.denominator != 1:
                                raise ValueError(f"{path.name}: a timestamp is not a multiple of the time base {tb}")
                            duration = (pkt.duration or 0) * scale
                            pkt.duration = int(duration) if duration.denominator == 1 and duration > 0 else step
                            yield pkt, int(value)

        n = 0
        pending: list[tuple[Any, int]] = []

        def pts_only() -> Iterator[int]:
            for item in packets():
                pending.append(item)
                yield item[1]

        last: int | None = None
        for dts in decode_timestamps(pts_only(), depth, step):
            pkt, pts = pending.pop()
            if dts > pts or (last is not None and dts <= last):
                raise ValueError(f"cannot order the joined packets (decode time {dts}, presentation {pts})")
            last = dts
            if check is not None:
                check()
            pkt.pts, pkt.dts = pts, dts
            pkt.time_base = tb
            pkt.stream = vout
            mux_others(pts * tb)
            out.mux(pkt)
            n += 1
        mux_others(None)
    return n
