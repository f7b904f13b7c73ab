"""A linear classifier on one space's embeddings, trained as perch-hoplite's agile loop does
(``agile/classifier.py``, ``classifier_data.py``), in numpy alone.

The same data: a window's target for a class is its positive share among that class's
positive and negative labels; labelled (window, class) pairs weigh 1, every other pair and
every unlabelled window (a *weak negative*, target 0) weighs ``weak_neg_weight``. The same
split: per class, at least ``min_eval_examples`` positives and negatives (or 1 - train_ratio
of them) held out, the union of held-out windows kept out of training. The same loss:
weighted binary cross-entropy, labelled and weak-negative windows mixed in the proportion
of hoplite's two batch sizes. One difference: the whole (bounded) set is one batch, so the
result does not depend on batch order, and windows labelled only "uncertain" or held out
are never used as weak negatives. No scikit-learn: a dependency for a 20-line logistic
regression, whose loss would differ from hoplite's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sevensense.agile.metrics import average_precision, macro, roc_auc
from sevensense.errors import LabelSetError, TooFewExamplesError
from sevensense.index.annotations import Annotation

VectorSource = Callable[[np.ndarray], np.ndarray]
Progress = Callable[[int, int], None]  # (done, total): a deferred job's progress
PROGRESS_EVERY = 25
"""Window ids → their vectors [n, D], from the index's own store."""


class TrainOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    learning_rate: float = Field(1e-3, gt=0.0, le=1.0)
    steps: int = Field(300, ge=1, le=2_000)
    weak_neg_weight: float = Field(0.05, ge=0.0, le=1.0)
    batch_size: int = Field(128, ge=1, description="labelled share of hoplite's batch")
    weak_batch_size: int = Field(128, ge=0, description="weak-negative share of its batch")
    train_ratio: float = Field(0.9, gt=0.0, lt=1.0)
    min_eval_examples: int = Field(1, ge=0)
    min_positives: int = Field(2, ge=1, description="per class, train and held out together")
    max_weak_negatives: int = Field(
        20_000, ge=0, le=50_000, description="a random sample beyond this"
    )
    seed: int = 0


@dataclass
class LabelData:
    """Labelled windows as hoplite's DataManager sees them."""

    classes: tuple[str, ...]
    window_ids: np.ndarray  # labelled windows (positive or negative for some class)
    targets: np.ndarray  # [n, C] positive share
    mask: np.ndarray  # [n, C] labelled for this class
    positives: dict[str, np.ndarray]
    negatives: dict[str, np.ndarray]
    annotated: np.ndarray  # every annotated window, uncertain included


def label_data(annotations: list[Annotation], classes: list[str] | None = None) -> LabelData:
    labels = tuple(classes) if classes else tuple(sorted({a.label for a in annotations}))
    column = {c: i for i, c in enumerate(labels)}
    pos: dict[int, np.ndarray] = {}
    neg: dict[int, np.ndarray] = {}
    for a in annotations:
        if a.label not in column or a.type == "uncertain":
            continue
        table = pos if a.type == "positive" else neg
        table.setdefault(a.window_id, np.zeros(len(labels)))[column[a.label]] += 1.0
    ids = np.asarray(sorted(set(pos) | set(neg)), dtype=np.int64)
    p = np.stack([pos.get(int(i), np.zeros(len(labels))) for i in ids]) if len(ids) else None
    n = np.stack([neg.get(int(i), np.zeros(len(labels))) for i in ids]) if len(ids) else None
    if p is None or n is None:
        p = n = np.zeros((0, len(labels)))
    count = p + n
    return LabelData(
        classes=labels,
        window_ids=ids,
        targets=(p / np.maximum(count, 1.0)).astype(np.float32),
        mask=count > 0,
        positives={c: ids[p[:, i] > 0] for c, i in column.items()},
        negatives={c: ids[n[:, i] > 0] for c, i in column.items()},
        annotated=np.asarray(sorted({a.window_id for a in annotations}), dtype=np.int64),
    )


def check_label_set(data: LabelData, min_positives: int) -> None:
    """422s before any work: a class too thin to train and hold out, or nothing to contrast."""
    for c in data.classes:
        n = len(data.positives[c])
        if n < min_positives:
            raise TooFewExamplesError(
                f"class {c!r} has {n} positive window(s); training needs at least "
                f"{min_positives} (one to train on, one held out)",
                label=c,
                positives=n,
                needed=min_positives,
            )
    if len(data.classes) < 2 and not any(len(v) for v in data.negatives.values()):
        only = data.classes[0] if data.classes else None
        raise LabelSetError(
            f"the label set has one class ({only!r}) and no negative labels: label a second "
            "class, or windows that are not this one as negative",
            label=only,
        )


def split(data: LabelData, options: TrainOptions) -> tuple[np.ndarray, np.ndarray]:
    """hoplite's ``AgileDataManager.get_train_test_split``: train and held-out window ids."""
    rng = np.random.default_rng(options.seed)
    evals: list[np.ndarray] = []
    for c in data.classes:
        pos, neg = data.positives[c].copy(), data.negatives[c].copy()
        rng.shuffle(pos)
        rng.shuffle(neg)
        held = 1.0 - options.train_ratio
        n_pos = max(int(held * len(pos)), options.min_eval_examples)
        n_neg = max(int(held * len(neg)), options.min_eval_examples)
        evals += [pos[:n_pos], neg[:n_neg]]
    held_out = np.unique(np.concatenate(evals)) if evals else np.zeros(0, np.int64)
    return np.setdiff1d(data.window_ids, held_out), held_out


def fit(
    x: np.ndarray,
    targets: np.ndarray,
    mask: np.ndarray,
    weak: np.ndarray,
    options: TrainOptions,
    on_step: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Full-batch Adam (float32) on hoplite's weighted BCE; returns (beta [D, C], bias [C]).
    ``on_step(step, steps)`` is called every ``PROGRESS_EVERY`` steps (a deferred job's
    progress; it may raise to stop)."""
    x = np.asarray(x, dtype=np.float32)
    weak = np.asarray(weak, dtype=np.float32).reshape(-1, x.shape[1])
    y = np.asarray(targets, dtype=np.float32)
    w = np.where(mask, 1.0, options.weak_neg_weight).astype(np.float32)
    dim, n_cls = x.shape[1], y.shape[1]
    share_l = options.batch_size / (options.batch_size + options.weak_batch_size)
    share_w = 1.0 - share_l if len(weak) else 0.0
    share_l = share_l if len(weak) else 1.0
    scale_l = share_l / max(len(x) * n_cls, 1)
    scale_w = share_w * options.weak_neg_weight / max(len(weak) * n_cls, 1)
    beta, bias = np.zeros((dim, n_cls), np.float32), np.zeros(n_cls, np.float32)
    m_b, v_b, m_c, v_c = (
        np.zeros_like(beta),
        np.zeros_like(beta),
        np.zeros_like(bias),
        np.zeros_like(bias),
    )
    b1, b2, eps = 0.9, 0.999, 1e-7
    for step in range(1, options.steps + 1):
        g_l = (_sigmoid(x @ beta + bias) - y) * w * scale_l
        g_beta = x.T @ g_l
        g_bias = g_l.sum(axis=0)
        if len(weak):
            g_w = _sigmoid(weak @ beta + bias) * scale_w
            g_beta += weak.T @ g_w
            g_bias += g_w.sum(axis=0)
        m_b = b1 * m_b + (1 - b1) * g_beta
        v_b = b2 * v_b + (1 - b2) * g_beta**2
        m_c = b1 * m_c + (1 - b1) * g_bias
        v_c = b2 * v_c + (1 - b2) * g_bias**2
        lr = np.float32(options.learning_rate * np.sqrt(1 - b2**step) / (1 - b1**step))
        beta -= lr * m_b / (np.sqrt(v_b) + eps)
        bias -= lr * m_c / (np.sqrt(v_c) + eps)
        if on_step is not None and (step % PROGRESS_EVERY == 0 or step == options.steps):
            on_step(step, options.steps)
    return beta.astype(np.float32), bias.astype(np.float32)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class ClassMetrics(BaseModel):
    label: str
    roc_auc: float | None
    average_precision: float | None
    train_positives: int
    train_negatives: int
    eval_positives: int
    eval_negatives: int


class TrainReport(BaseModel):
    classes: list[str]
    per_class: list[ClassMetrics]
    macro_roc_auc: float | None
    macro_average_precision: float | None
    train_windows: int
    eval_windows: int
    weak_negatives: int
    seconds: float
    options: TrainOptions


def evaluate(
    classes: tuple[str, ...],
    logits: np.ndarray,
    targets: np.ndarray,
    counts: dict[str, tuple[int, int, int, int]],
) -> tuple[list[ClassMetrics], float | None, float | None]:
    rows = []
    for i, c in enumerate(classes):
        positive = targets[:, i] > 0.5
        tp, tn, ep, en = counts[c]
        rows.append(
            ClassMetrics(
                label=c,
                roc_auc=roc_auc(logits[:, i], positive) if len(logits) else None,
                average_precision=average_precision(logits[:, i], positive)
                if len(logits)
                else None,
                train_positives=tp,
                train_negatives=tn,
                eval_positives=ep,
                eval_negatives=en,
            )
        )
    return (
        rows,
        macro([r.roc_auc for r in rows]),
        macro([r.average_precision for r in rows]),
    )


@dataclass
class Trained:
    beta: np.ndarray
    bias: np.ndarray
    report: TrainReport


def train(
    data: LabelData,
    vectors_of: VectorSource,
    all_window_ids: np.ndarray,
    options: TrainOptions,
    on_step: Progress | None = None,
) -> Trained:
    """Split, fit on the training windows and the weak negatives, score the held-out ones."""
    check_label_set(data, options.min_positives)
    started = time.perf_counter()
    train_ids, eval_ids = split(data, options)
    row = {int(w): i for i, w in enumerate(data.window_ids)}
    tr = np.asarray([row[int(w)] for w in train_ids], dtype=np.int64)
    ev = np.asarray([row[int(w)] for w in eval_ids], dtype=np.int64)
    weak_ids = np.setdiff1d(np.setdiff1d(all_window_ids, data.annotated), eval_ids)
    if len(weak_ids) > options.max_weak_negatives:
        rng = np.random.default_rng(options.seed + 1)
        weak_ids = np.sort(rng.choice(weak_ids, options.max_weak_negatives, replace=False))
    x_train = vectors_of(train_ids)
    beta, bias = fit(
        x_train, data.targets[tr], data.mask[tr], vectors_of(weak_ids), options, on_step
    )
    x_eval = vectors_of(eval_ids)
    logits = x_eval.astype(np.float64) @ beta + bias if len(eval_ids) else np.zeros((0, len(bias)))
    counts = {}
    for i, c in enumerate(data.classes):
        labelled = data.mask[:, i]
        pos = data.targets[:, i] > 0.5
        counts[c] = (
            int((labelled[tr] & pos[tr]).sum()),
            int((labelled[tr] & ~pos[tr]).sum()),
            int((labelled[ev] & pos[ev]).sum()),
            int((labelled[ev] & ~pos[ev]).sum()),
        )
    per_class, roc, ap = evaluate(data.classes, logits, data.targets[ev], counts)
    report = TrainReport(
        classes=list(data.classes),
        per_class=per_class,
        macro_roc_auc=roc,
        macro_average_precision=ap,
        train_windows=len(train_ids),
        eval_windows=len(eval_ids),
        weak_negatives=len(weak_ids),
        seconds=time.perf_counter() - started,
        options=options,
    )
    return Trained(beta, bias, report)
