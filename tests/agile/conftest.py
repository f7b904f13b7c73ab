"""The agile tests use the index tests' real parts: BirdNET windows of real recordings and
one PostgreSQL with pgvector for the session."""

from __future__ import annotations

from pathlib import Path

import pytest

from sevensense.index.hoplite import HopliteIndex
from sevensense.index.records import EntryBatch, SpaceInfo, SpaceKey
from sevensense.settings import IndexSettings
from tests.index.conftest import RealWindows, pg_url, real_windows  # noqa: F401
from tests.index.test_backends import metas

KEY = SpaceKey(model_name="birdnet-v2.4", model_version="2.4.0")


def space_of(windows: RealWindows) -> SpaceInfo:
    return SpaceInfo(
        key=KEY, dim=windows.vectors.shape[1], sample_rate=48000, window_s=3.0, hop_s=3.0
    )


def filled(index: HopliteIndex | object, windows: RealWindows) -> SpaceInfo:
    info = space_of(windows)
    index.add(info, EntryBatch(windows.vectors, metas(windows)))  # type: ignore[attr-defined]
    return info


@pytest.fixture
def hoplite_index(tmp_path: Path) -> HopliteIndex:
    return HopliteIndex(tmp_path, "agile", IndexSettings())
