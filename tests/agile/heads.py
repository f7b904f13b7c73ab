"""A classifier in a registry, for the tests of what runs one (hosts, worker, jobs)."""

from __future__ import annotations

import numpy as np

from sevensense.agile.heads import LinearHead
from sevensense.agile.store import Classifier, ClassifierStore
from sevensense.agile.train import TrainOptions, TrainReport
from sevensense.index.records import SpaceInfo, SpaceKey

KEY = SpaceKey(model_name="birdnet-v2.4", model_version="2.4.0")


def save_head(
    store: ClassifierStore,
    name: str,
    classes: tuple[str, ...],
    seed: int,
    owner: str | None = None,
) -> Classifier:
    """A registered classifier of BirdNET v2.4's full space with seeded random weights: what
    runs it is under test, not how it was trained."""
    rng = np.random.default_rng(seed)
    head = LinearHead(
        rng.normal(size=(1024, len(classes))).astype(np.float32),
        rng.normal(size=len(classes)).astype(np.float32),
        classes,
    )
    report = TrainReport(
        classes=list(classes),
        per_class=[],
        macro_roc_auc=None,
        macro_average_precision=None,
        train_windows=0,
        eval_windows=0,
        weak_negatives=0,
        seconds=0.0,
        options=TrainOptions(),
    )
    info = SpaceInfo(key=KEY, dim=1024)
    return store.save(head, name=name, space=info, owner=owner, index="t", report=report)
