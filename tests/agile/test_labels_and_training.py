"""Annotations on both backends and a classifier trained on them: real BirdNET windows of
real recordings (tenant "a": a dawn chorus and hand claps; tenant "b": a bird clip)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from sevensense.agile.store import ClassifierStore
from sevensense.agile.train import TrainOptions
from sevensense.agile.workflow import review, train_classifier
from sevensense.errors import (
    ClassifierMismatchError,
    ClassifierNotFoundError,
    LabelSetError,
    TooFewExamplesError,
    WindowNotFoundError,
)
from sevensense.index.annotations import AnnotationIn, annotation_store, covers
from sevensense.index.base import VectorIndex
from sevensense.index.hoplite import HopliteIndex
from sevensense.index.pgvector import PgVectorIndex
from sevensense.index.records import Scope, SpaceKey
from sevensense.settings import IndexSettings
from tests.agile.conftest import KEY, filled
from tests.index.conftest import RealWindows

A = Scope.of("a")
_names = (f"ag{i}" for i in itertools.count())


@pytest.fixture(params=["hoplite", "pgvector"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorIndex]:
    opened: VectorIndex
    if request.param == "hoplite":
        opened = HopliteIndex(tmp_path / "index", next(_names), IndexSettings())
    else:
        opened = PgVectorIndex(request.getfixturevalue("pg_url"), next(_names), IndexSettings())
    yield opened
    opened.close()


def labels(index: VectorIndex, real_windows: RealWindows) -> None:
    """claps: the clap recording's first 5 windows; chorus: 6 of the soundscape's."""
    filled(index, real_windows)
    store = annotation_store(index)
    items = [
        AnnotationIn(recording_id="site9/clap", start_s=s, end_s=s + 3.0, label="clap")
        for s in (0.0, 3.0, 6.0, 9.0, 12.0)
    ] + [
        AnnotationIn(recording_id="site7/soundscape", start_s=s, end_s=s + 3.0, label="chorus")
        for s in (0.0, 15.0, 30.0, 45.0, 60.0, 75.0)
    ]
    store.annotate(KEY, items, A)


def test_covers_rule() -> None:
    assert covers(0.0, 3.0, 1.0, 1.5)  # a short call inside a window
    assert covers(3.0, 6.0, 2.0, 10.0)  # a window inside a long selection
    assert not covers(0.0, 3.0, 2.5, 10.0)  # a sliver of the window
    assert not covers(0.0, 3.0, 3.0, 4.0)


def test_annotations_idempotent_per_tenant(index: VectorIndex, real_windows: RealWindows) -> None:
    filled(index, real_windows)
    store = annotation_store(index)
    windows = store.windows(KEY, A)
    assert {w.tenant for w in windows} == {"a"}
    first = windows[0]
    by_id = AnnotationIn(window_id=first.window_id, label="chorus", provenance="me")
    got = store.annotate(KEY, [by_id], A)
    assert (got.added, got.updated, got.unchanged) == (1, 0, 0)
    again = store.annotate(KEY, [by_id, by_id], A)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 1)
    flipped = store.annotate(KEY, [by_id.model_copy(update={"type": "negative"})], A)
    assert (flipped.added, flipped.updated) == (0, 1)
    # a span that covers two clap windows (3-6 s fully, 6-9 s by 2 s of 3)
    span = AnnotationIn(recording_id="site9/clap", start_s=3.0, end_s=8.0, label="clap")
    spanned = store.annotate(KEY, [span], A)
    assert [(a.start_s, a.end_s) for a in spanned.annotations] == [(3.0, 6.0), (6.0, 9.0)]
    listed = store.annotations(KEY, A)
    assert [(a.label, a.type) for a in listed] == [
        ("chorus", "negative"),
        ("clap", "positive"),
        ("clap", "positive"),
    ]
    assert store.annotations(KEY, Scope.of("b")) == []
    assert len(store.annotations(KEY, Scope.everyone())) == 3
    # tenant b cannot label tenant a's window, by id or by span: 404, nothing written
    with pytest.raises(WindowNotFoundError):
        store.annotate(KEY, [by_id], Scope.of("b"))
    with pytest.raises(WindowNotFoundError):
        store.annotate(KEY, [span], Scope.of("b"))
    assert store.delete(KEY, Scope.of("b"), label="clap") == 0
    assert store.delete(KEY, A, label="clap") == 2
    assert [a.label for a in store.annotations(KEY, A)] == ["chorus"]
    # a space dropped and made again (its window ids start over) keeps none of the labels
    index.drop_space(KEY)
    filled(index, real_windows)
    assert annotation_store(index).annotations(KEY, Scope.everyone()) == []


def test_train_classifier_and_heads_agree(
    index: VectorIndex, real_windows: RealWindows, tmp_path: Path
) -> None:
    labels(index, real_windows)
    store = ClassifierStore(tmp_path / "models")
    info = index.space(KEY)
    clf = train_classifier(index, info, A, store, "claps", None, TrainOptions())
    report = clf.manifest.report
    assert report.classes == ["chorus", "clap"]
    assert [m.eval_positives for m in report.per_class] == [1, 1]
    assert [m.train_positives for m in report.per_class] == [5, 4]
    tenant_a = sum(
        s in ("soundscape_birdnet_120s_48k", "perch_clap_21s_16k") for s in real_windows.sources
    )
    assert report.weak_negatives == tenant_a - 11  # tenant a's unlabelled windows
    assert report.macro_roc_auc is not None and report.macro_roc_auc >= 0.99
    assert clf.manifest.space == KEY and clf.manifest.owner == "a"
    again = store.resolve("claps", "a")
    assert again.ref == "claps:1" and again.manifest.sha256 == clf.manifest.sha256
    # the ONNX head and the JSON weights give the same logits
    vectors = real_windows.vectors
    session = ort.InferenceSession(str(again.onnx_path), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(["logits"], {"embedding": vectors})
    assert np.allclose(onnx_logits, again.head(vectors), atol=1e-5)
    clap_rows = [i for i, s in enumerate(real_windows.sources) if s == "perch_clap_21s_16k"]
    others = [i for i, s in enumerate(real_windows.sources) if s != "perch_clap_21s_16k"]
    clap = onnx_logits[:, 1]
    assert clap[clap_rows].min() > np.median(clap[others])
    # review: unlabelled windows only; the best clap candidates are the three unlabelled claps
    top = review(index, info, A, again, "clap", "top", k=3)
    assert {(w.recording_id, w.start_s) for w in top} == {
        ("site9/clap", 15.0),
        ("site9/clap", 18.0),
        ("site9/clap", 21.0),
    }
    assert not any(w.labelled for w in top)
    margin = review(index, info, A, again, "clap", "margin", k=3)
    assert [abs(w.score) for w in margin] == sorted(abs(w.score) for w in margin)
    # a second training is a new version; other tenants do not see it
    assert train_classifier(index, info, A, store, "claps", None, TrainOptions()).ref == "claps:2"
    with pytest.raises(ClassifierNotFoundError):
        store.resolve("claps", "b")
    other = SpaceKey(model_name="birdnet-v2.4", model_version="2.5.0")
    with pytest.raises(ClassifierMismatchError) as mismatch:
        again.check_space(other)
    assert "2.4.0" in mismatch.value.message and "2.5.0" in mismatch.value.message


def test_label_sets_that_cannot_train(
    index: VectorIndex, real_windows: RealWindows, tmp_path: Path
) -> None:
    labels(index, real_windows)
    store = ClassifierStore(tmp_path / "models")
    info = index.space(KEY)
    with pytest.raises(TooFewExamplesError) as few:
        train_classifier(index, info, A, store, "x", None, TrainOptions(min_positives=6))
    assert few.value.details == {"label": "clap", "positives": 5, "needed": 6}
    with pytest.raises(LabelSetError):
        train_classifier(index, info, A, store, "x", ["clap"], TrainOptions())
    assert store.manifests() == []
