"""L2 normalisation, the zero-norm rule, validation and top-k (ADR-007 §3.1, Appendix B)."""

from __future__ import annotations

import numpy as np

from sevensense.inference.postprocess import assess, l2_normalize, sigmoid, top_k


def test_rows_become_unit_vectors() -> None:
    x = np.random.default_rng(0).standard_normal((5, 1536)).astype(np.float32) * 7
    y, norms = l2_normalize(x)
    assert np.allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-6)
    assert np.allclose(norms, np.linalg.norm(x.astype(np.float64), axis=1))
    assert all(assess(row, n).is_valid for row, n in zip(y, norms, strict=True))


def test_zero_norm_rows_become_e0_and_are_flagged() -> None:
    x = np.zeros((2, 8), np.float32)
    x[1] = 1e-14
    y, norms = l2_normalize(x)
    assert np.array_equal(y[0], np.eye(8, dtype=np.float32)[0]) and np.array_equal(y[1], y[0])
    q = assess(y[0], float(norms[0]))
    assert q.zero_norm and not q.is_valid and q.flags() == ["zero_norm"]
    assert q.sparsity == 7 / 8


def test_nan_and_inf_are_flagged_not_hidden() -> None:
    x = np.ones((2, 4), np.float32)
    x[0, 1] = np.nan
    x[1, 2] = np.inf
    y, norms = l2_normalize(x)
    assert "nan" in assess(y[0], float(norms[0])).flags()
    q = assess(y[1], float(norms[1]))
    assert not q.is_valid and ("inf" in q.flags() or "nan" in q.flags())


def test_top_k_is_sorted_with_sigmoid_scores() -> None:
    logits = np.array([0.0, 3.0, -2.0, 5.0, 1.0], np.float32)
    got = top_k(logits, ["a", "b", "c", "d", "e"], 3)
    assert [n for n, _ in got] == ["d", "b", "e"]
    assert np.allclose([s for _, s in got], 1 / (1 + np.exp(-np.array([5.0, 3.0, 1.0]))))
    assert top_k(logits, None, 2)[0][0] == "3"
    assert top_k(logits, None, 0) == [] and len(top_k(logits, None, 99)) == 5
    assert np.isfinite(sigmoid(np.array([-1e4, 1e4]))).all()
