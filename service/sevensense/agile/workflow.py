"""The agile loop's steps over an open index: train a classifier on one space's labels,
and pick the windows to label next. The faces (CLI, HTTP) only parse and answer."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel

from sevensense.agile.heads import LinearHead
from sevensense.agile.store import Classifier, ClassifierStore
from sevensense.agile.train import Progress, TrainOptions, label_data, train
from sevensense.errors import RequestError
from sevensense.index.annotations import AnnotationStore, IndexedWindow, annotation_store
from sevensense.index.base import VectorIndex
from sevensense.index.records import Scope, SpaceInfo

ReviewMode = Literal["top", "margin"]
BLOCK = 4096


def train_classifier(
    index: VectorIndex,
    space: SpaceInfo,
    scope: Scope,
    store: ClassifierStore,
    name: str,
    classes: list[str] | None,
    options: TrainOptions,
    on_step: Progress | None = None,
) -> Classifier:
    """The scope's labels in ``space`` → a new classifier version (422 before any work when
    the label set cannot train)."""
    annotations = annotation_store(index)
    found = annotations.annotations(space.key, scope)
    if classes:
        found = [a for a in found if a.label in set(classes)]
    data = label_data(found, classes)
    all_ids = np.asarray([w.window_id for w in annotations.windows(space.key, scope)], np.int64)
    trained = train(
        data, lambda ids: annotations.vectors(space.key, ids), all_ids, options, on_step
    )
    head = LinearHead(trained.beta, trained.bias, data.classes)
    return store.save(
        head,
        name=name,
        space=space,
        owner=scope.tenant,
        index=index.name,
        report=trained.report,
    )


def scored_blocks(
    store: AnnotationStore,
    space: SpaceInfo,
    windows: Sequence[IndexedWindow],
    classifier: Classifier,
) -> Iterator[tuple[Sequence[IndexedWindow], np.ndarray]]:
    """``windows`` with the head's logits [n, C], ``BLOCK`` at a time: memory is bounded by
    a block of vectors whatever the index's size."""
    classifier.check_space(space.key)
    for start in range(0, len(windows), BLOCK):
        block = windows[start : start + BLOCK]
        ids = np.asarray([w.window_id for w in block], dtype=np.int64)
        yield block, classifier.head(store.vectors(space.key, ids))


def _column(classifier: Classifier, label: str) -> int:
    if label not in classifier.head.classes:
        raise RequestError(
            f"classifier {classifier.ref} has no class {label!r}; it has "
            f"{', '.join(classifier.head.classes)}"
        )
    return classifier.head.classes.index(label)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The head's score, as live requests report it (``agile/apply.py``)."""
    return np.asarray(1.0 / (1.0 + np.exp(-logits.astype(np.float64))), dtype=np.float32)


class ReviewWindow(BaseModel):
    window_id: int
    recording_id: str
    start_s: float
    end_s: float
    label: str
    score: float
    labelled: bool
    links: dict[str, str] = {}


def review(
    index: VectorIndex,
    space: SpaceInfo,
    scope: Scope,
    classifier: Classifier,
    label: str,
    mode: ReviewMode = "top",
    k: int = 20,
    exclude_labelled: bool = True,
) -> list[ReviewWindow]:
    """The scope's windows by the class's logit: highest first (``top``), or nearest to the
    decision boundary, logit 0 (``margin``); scored block by block (bounded memory)."""
    classifier.check_space(space.key)
    column = _column(classifier, label)
    store = annotation_store(index)
    windows = store.windows(space.key, scope)
    labelled = {a.window_id for a in store.annotations(space.key, scope, label)}
    if exclude_labelled:
        windows = [w for w in windows if w.window_id not in labelled]
    scores = np.concatenate(
        [logits[:, column] for _, logits in scored_blocks(store, space, windows, classifier)]
        or [np.zeros(0, np.float32)]
    )
    key = -scores if mode == "top" else np.abs(scores)
    order = np.argsort(key, kind="stable")[:k]
    return [
        ReviewWindow(
            window_id=windows[i].window_id,
            recording_id=windows[i].recording_id,
            start_s=windows[i].start_s,
            end_s=windows[i].end_s,
            label=label,
            score=float(scores[i]),
            labelled=windows[i].window_id in labelled,
        )
        for i in order
    ]


MAX_HISTOGRAM_SAMPLE = 100_000
MAX_HISTOGRAM_BINS = 200


class ScoreHistogram(BaseModel):
    """Counts of sampled windows' scores (sigmoid of the logit) in equal bins over [0, 1]."""

    label: str
    windows: int
    sampled: int
    seed: int
    edges: list[float]
    counts: list[int]
    mean: float | None


def histogram(
    index: VectorIndex,
    space: SpaceInfo,
    scope: Scope,
    classifier: Classifier,
    label: str,
    bins: int = 20,
    sample: int = 10_000,
    seed: int = 0,
) -> ScoreHistogram:
    """How a class's scores spread over a seeded random sample of at most ``sample`` of the
    scope's windows: where to put ``min_conf``, and whether the class separates at all."""
    if not 1 <= bins <= MAX_HISTOGRAM_BINS or not 1 <= sample <= MAX_HISTOGRAM_SAMPLE:
        raise RequestError(
            f"bins must be 1..{MAX_HISTOGRAM_BINS} and sample 1..{MAX_HISTOGRAM_SAMPLE}"
        )
    classifier.check_space(space.key)
    column = _column(classifier, label)
    store = annotation_store(index)
    windows = store.windows(space.key, scope)
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(windows), min(sample, len(windows)), replace=False))
    chosen = [windows[i] for i in picked]
    scores = np.concatenate(
        [sigmoid(lg[:, column]) for _, lg in scored_blocks(store, space, chosen, classifier)]
        or [np.zeros(0, np.float32)]
    )
    counts, edges = np.histogram(scores, bins=bins, range=(0.0, 1.0))
    return ScoreHistogram(
        label=label,
        windows=len(windows),
        sampled=len(chosen),
        seed=seed,
        edges=[float(e) for e in edges],
        counts=[int(c) for c in counts],
        mean=float(scores.mean()) if len(scores) else None,
    )
