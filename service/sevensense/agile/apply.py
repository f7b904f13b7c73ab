"""A classifier on live requests: its ONNX head run on the (transformed) embeddings of a
batch of windows; each window gets its (class, sigmoid score) pairs. The model services run
it inside their batches (:mod:`sevensense.agile.served_head`), the command line (its own
model host) and the gateway's cache-served windows through :func:`with_custom`; both call
:func:`head_logits` and :func:`pairs`. A window answered with a flagged zero vector (a
degraded fallback) gets none: a score of nothing would look like a "no"."""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np

from sevensense.agile.heads import INPUT, OUTPUT
from sevensense.agile.store import Classifier
from sevensense.inference.engine import WindowResult


@functools.lru_cache(maxsize=32)
def _session(path: str, sha256: str) -> object:
    """One ONNX Runtime session per head file version (keyed by its verified SHA-256)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def head_logits(classifier: Classifier, embeddings: np.ndarray) -> np.ndarray:
    session = _session(str(classifier.onnx_path), classifier.manifest.onnx_sha256)
    batch = np.ascontiguousarray(embeddings, dtype=np.float32)
    (logits,) = session.run([OUTPUT], {INPUT: batch})  # type: ignore[attr-defined]
    return np.asarray(logits, dtype=np.float32)


def pairs(classes: tuple[str, ...], logits: np.ndarray) -> list[tuple[str, float]]:
    """One window's logits as (class, sigmoid score)."""
    scores = 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))
    return [(c, float(s)) for c, s in zip(classes, scores, strict=True)]


def is_live(result: WindowResult) -> bool:
    return result.quality.is_valid and bool(np.any(result.embedding))


def with_custom(classifier: Classifier | None, results: list[WindowResult]) -> list[WindowResult]:
    if classifier is None or not results:
        return results
    live = [i for i, r in enumerate(results) if is_live(r)]
    out = list(results)
    if not live:
        return out
    logits = head_logits(classifier, np.stack([results[i].embedding for i in live]))
    for row, i in enumerate(live):
        out[i] = replace(results[i], custom=pairs(classifier.head.classes, logits[row]))
    return out
