"""A trained classifier over a whole index space: the score histogram of a seeded sample,
the scores of every window (Parquet), BirdNET-Analyzer files of its detections, and call
density per recording and per site/day; on real BirdNET windows of real recordings."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sevensense.agile.bulk import apply_classifier
from sevensense.agile.density import covered_hours
from sevensense.agile.store import ClassifierStore
from sevensense.agile.train import TrainOptions
from sevensense.agile.workflow import histogram, train_classifier
from sevensense.errors import RequestError
from sevensense.index.annotations import annotation_store
from sevensense.index.hoplite import HopliteIndex
from sevensense.index.records import Scope
from tests.agile.conftest import KEY
from tests.agile.test_labels_and_training import A, labels
from tests.index.conftest import RealWindows


def test_covered_hours_counts_overlap_once() -> None:
    assert covered_hours([(0.0, 3.0), (1.5, 4.5), (10.0, 13.0)]) == pytest.approx(7.5 / 3600)


def test_histogram_apply_and_density(
    hoplite_index: HopliteIndex, real_windows: RealWindows, tmp_path: Path
) -> None:
    labels(hoplite_index, real_windows)
    info = hoplite_index.space(KEY)
    clf = train_classifier(
        hoplite_index, info, A, ClassifierStore(tmp_path / "m"), "c", None, TrainOptions()
    )
    tenant_a = [
        s in ("soundscape_birdnet_120s_48k", "perch_clap_21s_16k") for s in real_windows.sources
    ]
    n_a = sum(tenant_a)

    full = histogram(hoplite_index, info, A, clf, "clap", bins=10, sample=10_000)
    assert full.windows == full.sampled == n_a and sum(full.counts) == n_a
    assert len(full.edges) == 11 and full.edges[0] == 0.0 and full.edges[-1] == 1.0
    some = histogram(hoplite_index, info, A, clf, "clap", bins=10, sample=9, seed=3)
    assert some.sampled == 9 and sum(some.counts) == 9
    assert some == histogram(hoplite_index, info, A, clf, "clap", bins=10, sample=9, seed=3)
    with pytest.raises(RequestError):
        histogram(hoplite_index, info, A, clf, "clap", bins=0)
    with pytest.raises(RequestError):
        histogram(hoplite_index, info, A, clf, "frog")

    out = tmp_path / "out"
    summary = apply_classifier(
        hoplite_index, info, A, clf, out, ("scores", "raven", "csv"), min_conf=0.5, density="csv"
    )
    assert summary.windows == n_a and summary.recordings == 2
    scores = pq.read_table(out / "scores.parquet").to_pylist()
    assert len(scores) == n_a
    assert {r["recording_id"] for r in scores} == {"site7/soundscape", "site9/clap"}
    ids = np.asarray([r["window_id"] for r in scores], np.int64)
    want = 1 / (1 + np.exp(-clf.head(annotation_store(hoplite_index).vectors(KEY, ids))))
    got = np.asarray([[r["chorus"], r["clap"]] for r in scores])
    assert np.allclose(got, want, atol=1e-6)
    rows = [i for i, a in enumerate(tenant_a) if a]  # index order is insertion order
    assert np.allclose(got, 1 / (1 + np.exp(-clf.head(real_windows.vectors[rows]))), atol=1e-4)
    # detections: every window at or over min_conf, per class
    assert summary.detections == {
        "chorus": int((want[:, 0] >= 0.5).sum()),
        "clap": int((want[:, 1] >= 0.5).sum()),
    }
    assert summary.detections["clap"] >= 5
    table = (out / "clap.BirdNET.results.csv").read_text().splitlines()
    assert table[0].startswith("Start (s),End (s),Scientific name")
    assert sum(",clap,clap," in line for line in table) == int(
        (got[[r["recording_id"] == "site9/clap" for r in scores], 1] >= 0.5).sum()
    )
    assert (out / "BirdNET_SelectionTable.txt").is_file()
    # density: per recording and per site/day, from the same scores
    with (out / "density_recordings.csv").open() as f:
        per_rec = list(csv.DictReader(f))
    clap_row = next(
        r for r in per_rec if r["recording_id"] == "site9/clap" and r["label"] == "clap"
    )
    clap_windows = [
        s for r, s in zip(scores, got[:, 1], strict=True) if r["recording_id"] == "site9/clap"
    ]
    assert int(clap_row["detections"]) == sum(s >= 0.5 for s in clap_windows)
    assert clap_row["site"] == "south" and clap_row["day"] == "2026-06-01"
    hours = float(clap_row["hours"])
    clap_end = max(r["end_s"] for r in scores if r["recording_id"] == "site9/clap")
    assert hours == pytest.approx(clap_end / 3600)  # contiguous windows from 0 s, no overlap
    assert float(clap_row["per_hour"]) == pytest.approx(int(clap_row["detections"]) / hours)
    with (out / "density_site_day.csv").open() as f:
        per_site = list(csv.DictReader(f))
    assert {(r["site"], r["day"]) for r in per_site} == {
        ("north", "2026-05-01"),
        ("south", "2026-06-01"),
    }
    assert sum(int(r["detections"]) for r in per_site) == sum(summary.detections.values())
    # another tenant's scope has none of tenant a's windows
    other = apply_classifier(hoplite_index, info, Scope.of("b"), clf, tmp_path / "b")
    assert other.windows == sum(not a for a in tenant_a)
