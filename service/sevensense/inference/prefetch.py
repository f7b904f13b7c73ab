"""Pre-processing ahead of inference: an iterator drained by a background thread into a
bounded queue.

Decoding, resampling and windowing a recording cost about a sixth of the inference time
(issue 25); run in the caller's thread they add to it. libsndfile, soxr and ONNX Runtime
all release the GIL, so one producer thread overlaps them with ``session.run`` on the
same cores. The queue holds at most ``depth`` items, so memory stays bounded for any
length of audio; the producer stops when the consumer closes the iterator early.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable
from typing import TypeVar

T = TypeVar("T")

_POLL_S = 0.1


class _Done:
    """The end of the stream; carries the producer's exception, if any."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def prefetched(
    items: Iterable[T], depth: int, name: str = "sevensense-prefetch"
) -> Generator[T, None, None]:
    """``items`` in order, produced by a daemon thread up to ``depth`` ahead of the caller.

    An exception raised by ``items`` reaches the caller at the point where it happened in
    the stream, after the items before it. ``depth`` 0 iterates in the caller's thread."""
    if depth <= 0:
        yield from items
        return
    slots: queue.Queue[T | _Done] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: T | _Done) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if not offer(item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            offer(_Done(exc))
            return
        finally:
            if stop.is_set():
                close = getattr(source, "close", None)
                if close is not None:
                    close()  # the consumer left early: release files now, not at collection
        offer(_Done())

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if isinstance(item, _Done):
                if item.error is not None:
                    raise item.error
                return
            yield item
    finally:
        stop.set()
        worker.join()
