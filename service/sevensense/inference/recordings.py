"""Embedding many recordings in one run, isolating failures per recording.

Windows from consecutive recordings share batches (short clips would otherwise run at
batch 1); they are decoded ahead of inference by a background thread
(:mod:`~sevensense.inference.prefetch`). A recording that fails to decode is reported and
the run goes on; if it failed part-way (a truncated field recording, say), the windows
before the damage are kept and the recording is marked ``partial``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sevensense.audio.decode import AudioSource
from sevensense.audio.pipeline import StreamStats, prepare_windows
from sevensense.audio.windowing import Window
from sevensense.errors import SevensenseError
from sevensense.inference.engine import EmbeddingEngine, EmbedOptions, WindowResult
from sevensense.inference.prefetch import prefetched
from sevensense.inference.sessions import LoadedModel

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff"})


@dataclass
class RecordingReport:
    source: str
    status: str = "pending"
    windows: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)
    duration_s: float = 0.0
    sample_rate: int | None = None
    channels: int | None = None
    error: dict[str, Any] | None = None


@dataclass
class RunSummary:
    model: str
    provider: str
    recordings: list[RecordingReport] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def failed(self) -> list[RecordingReport]:
        return [r for r in self.recordings if r.status != "ok"]

    @property
    def windows(self) -> int:
        return sum(r.windows for r in self.recordings)

    @property
    def audio_s(self) -> float:
        return sum(r.duration_s for r in self.recordings)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "provider": self.provider,
            "windows": self.windows,
            "audio_s": round(self.audio_s, 3),
            "wall_s": round(self.wall_s, 3),
            "recordings": [asdict(r) for r in self.recordings],
        }


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given; directories searched recursively for audio files, sorted."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(
                sorted(
                    p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
                )
            )
        else:
            found.append(path)
    return found


def embed_recordings(
    engine: EmbeddingEngine,
    sources: Sequence[AudioSource],
    sink: Callable[[WindowResult], None],
    *,
    model: LoadedModel | None = None,
    options: EmbedOptions | None = None,
    names: Sequence[str] | None = None,
    on_window: Callable[[WindowResult], None] | None = None,
) -> RunSummary:
    loaded = model or engine.model()
    config = engine.preprocess_config(loaded, options)
    summary = RunSummary(str(loaded.identity), loaded.provider)
    reports: dict[str, RecordingReport] = {}
    start = time.perf_counter()

    def windows() -> Iterator[tuple[str, Window]]:
        for i, source in enumerate(sources):
            name = names[i] if names else str(source)
            report = RecordingReport(name)
            summary.recordings.append(report)
            reports[name] = report
            stats = StreamStats()
            emitted = 0
            try:
                for window in prepare_windows(source, config, stats):
                    emitted += 1
                    yield name, window
                report.status = "ok"
            except SevensenseError as exc:
                report.status = "partial" if emitted else "failed"
                report.error = exc.to_dict()
            except Exception as exc:  # an unexpected bug must not end the whole run
                report.status = "partial" if emitted else "failed"
                report.error = {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
            finally:
                report.duration_s = stats.duration_s
                if stats.info is not None:
                    report.sample_rate = stats.info.sample_rate
                    report.channels = stats.info.channels
                report.skipped = [
                    {"index": s.index, "start_s": s.start_s, "end_s": s.end_s, "reason": s.reason}
                    for s in stats.skipped
                ]

    ahead = prefetched(windows(), engine.settings.inference.prefetch_windows)
    for result in engine.embed_windows(loaded, ahead, options):
        reports[result.source].windows += 1
        sink(result)
        if on_window is not None:
            on_window(result)
    summary.wall_s = time.perf_counter() - start
    return summary
