"""Handing freed heap back to the system after a recording.

glibc keeps what a thread freed in that thread's arena; the HTTP entry decodes in a pool of
worker threads, so blocks freed by one request stay resident after it. ``malloc_trim``
returns the free top of every arena (measured in docs/audio-and-outputs.md)."""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_freed() -> None:
    trim = _trim()
    if trim is not None:
        trim(0)
