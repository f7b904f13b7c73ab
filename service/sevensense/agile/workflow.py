"""The agile loop's steps over an open index: train a classifier on one space's labels,
and pick the windows to label next. The faces (CLI, HTTP) only parse and answer."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel

from sevensense.agile.heads import LinearHead
from sevensense.agile.store import Classifier, ClassifierStore
from sevensense.agile.train import TrainOptions, label_data, train
from sevensense.errors import RequestError
from sevensense.index.annotations import annotation_store
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
) -> Classifier:
    """The scope's labels in ``space`` → a new classifier version (422 before any work when
    the label set cannot train)."""
    annotations = annotation_store(index)
    found = annotations.annotations(space.key, scope)
    if classes:
        found = [a for a in found if a.label in set(classes)]
    data = label_data(found, classes)
    all_ids = np.asarray([w.window_id for w in annotations.windows(space.key, scope)], np.int64)
    trained = train(data, lambda ids: annotations.vectors(space.key, ids), all_ids, options)
    head = LinearHead(trained.beta, trained.bias, data.classes)
    return store.save(
        head,
        name=name,
        space=space,
        owner=scope.tenant,
        index=index.name,
        report=trained.report,
    )


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
    if label not in classifier.head.classes:
        raise RequestError(
            f"classifier {classifier.ref} has no class {label!r}; it has "
            f"{', '.join(classifier.head.classes)}"
        )
    column = classifier.head.classes.index(label)
    store = annotation_store(index)
    windows = store.windows(space.key, scope)
    labelled = {a.window_id for a in store.annotations(space.key, scope, label)}
    if exclude_labelled:
        windows = [w for w in windows if w.window_id not in labelled]
    scores = np.zeros(len(windows), dtype=np.float32)
    for start in range(0, len(windows), BLOCK):
        block = windows[start : start + BLOCK]
        ids = np.asarray([w.window_id for w in block], dtype=np.int64)
        scores[start : start + len(block)] = classifier.head(store.vectors(space.key, ids))[
            :, column
        ]
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
