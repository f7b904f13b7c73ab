"""What the index tells the layers above it without knowing them: the serving layer
listens for compactions (their time is a metric); the index imports nothing upward."""

from __future__ import annotations

from collections.abc import Callable

CompactionListener = Callable[[str, str, float], None]  # index name, space slug, seconds
_compaction: list[CompactionListener] = []


def on_compaction(listener: CompactionListener) -> None:
    if listener not in _compaction:
        _compaction.append(listener)


def compacted(index: str, space: str, seconds: float) -> None:
    for listener in list(_compaction):
        listener(index, space, seconds)
