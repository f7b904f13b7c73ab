"""OpenTelemetry spans for the request path; export is BentoML's (OTLP when configured).

BentoML propagates the trace context on its own calls between services, but a batch mixes
windows of many requests, so each window also carries its request's context and the model
service opens its queue/infer spans under the right parent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import Span

from sevensense.audio.pipeline import StreamStats

_TRACER_NAME = "sevensense"
_installed: list[trace.TracerProvider] = []


def install(provider: trace.TracerProvider) -> None:
    """Use BentoML's provider (its sampler and exporter); it does not set the global one."""
    _installed[:] = [provider]


def tracer() -> trace.Tracer:
    if _installed:
        return _installed[0].get_tracer(_TRACER_NAME)
    return trace.get_tracer(_TRACER_NAME)


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[Span]:
    with tracer().start_as_current_span(name, attributes=attributes) as current:
        yield current


def carrier() -> dict[str, str]:
    """The current context as W3C headers, to travel inside a window item."""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


def timed_span(
    name: str,
    start_ns: int,
    end_ns: int,
    parent: Mapping[str, str] | None = None,
    **attributes: Any,
) -> None:
    """A span recorded after the fact (batched work is timed first, attributed later)."""
    ctx = propagate.extract(dict(parent)) if parent else context.get_current()
    current = tracer().start_span(name, context=ctx, start_time=start_ns, attributes=attributes)
    current.end(end_time=end_ns)


def stage_spans(stats: StreamStats, start_ns: int) -> None:
    """Decode, resample and window spans laid end to end from their accumulated times.

    The stages interleave block by block while streaming; one span per stage with its total
    time reads better in a trace viewer than hundreds of per-block spans.
    """
    cursor = start_ns
    for name, seconds in (
        ("decode", stats.decode_s),
        ("resample", stats.resample_s),
        ("window", stats.window_s),
    ):
        end = cursor + int(seconds * 1e9)
        timed_span(name, cursor, end, windows=stats.windows, input_frames=stats.input_frames)
        cursor = end


def now_ns() -> int:
    return time.time_ns()
