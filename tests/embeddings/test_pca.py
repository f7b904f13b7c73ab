"""PCA against closed forms and numpy's SVD: the axes, the variance, re-normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from sevensense.embeddings.pca import fit_pca
from sevensense.errors import ReducerMismatchError, RequestError


def test_known_axes_and_variances() -> None:
    """Data built on orthonormal axes with known variances: PCA must find exactly those."""
    rng = np.random.default_rng(0)
    d, n = 12, 4000
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    scales = np.array([5.0, 3.0, 2.0, 1.0] + [0.1] * (d - 4))
    latent = rng.normal(size=(n, d))
    x = (latent * scales) @ basis.T + 7.0
    pca = fit_pca(x.astype(np.float32), 3)
    cov = np.cov(x.T)
    total = np.trace(cov)
    assert pca.total_variance == pytest.approx(total, rel=1e-5)
    # each found axis is (up to sign) an eigenvector of the sample covariance, in order
    values = np.sort(np.linalg.eigvalsh(cov))[::-1][:3]
    assert np.allclose(pca.explained_variance, values, rtol=1e-4)
    for axis, value in zip(pca.components, values, strict=True):
        assert np.allclose(cov @ axis, value * axis, atol=1e-3 * value)
    assert abs(pca.components[0] @ basis[:, 0]) > 0.999
    assert pca.kept_variance == pytest.approx(values.sum() / total, rel=1e-5)
    assert np.allclose(pca.mean, x.mean(0), atol=1e-4)


def test_matches_svd_reference_and_renormalises() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 40)) @ rng.normal(size=(40, 40))
    pca = fit_pca(x, 10)
    centred = x - x.mean(0)
    _, sv, vt = np.linalg.svd(centred, full_matrices=False)
    assert np.allclose(np.abs(pca.components @ vt[:10].T), np.eye(10), atol=1e-6)
    assert np.allclose(pca.explained_variance, sv[:10] ** 2 / (len(x) - 1), rtol=1e-8)
    out = pca.apply(x[:50])
    assert out.dtype == np.float32 and out.shape == (50, 10)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    reference = centred[:50] @ pca.components.T
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    assert np.allclose(out, reference, atol=1e-6)
    one = pca.apply(x[0].astype(np.float32))
    assert one.shape == (10,) and np.allclose(one, out[0], atol=1e-6)


def test_full_dimension_keeps_cosine_order_of_centred_vectors() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 16))
    pca = fit_pca(x, 16)
    assert pca.kept_variance == pytest.approx(1.0)
    c = x - x.mean(0)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    y = pca.apply(x).astype(np.float64)
    assert np.allclose(y @ y.T, c @ c.T, atol=1e-5)  # a rotation: cosines unchanged


def test_sign_is_deterministic_and_mean_maps_to_e0() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 8))
    a, b = fit_pca(x, 4), fit_pca(x[::-1].copy(), 4)
    assert np.allclose(a.components, b.components, atol=1e-10)
    out = a.apply(a.mean[None, :])
    assert np.array_equal(out[0], np.eye(4, dtype=np.float32)[0])


def test_refusals() -> None:
    x = np.random.default_rng(4).normal(size=(20, 8))
    with pytest.raises(RequestError):
        fit_pca(x, 9)
    with pytest.raises(RequestError):
        fit_pca(x[:5], 5)
    with pytest.raises(RequestError):
        fit_pca(np.where(x > 2, np.nan, x), 2)
    with pytest.raises(ReducerMismatchError):
        fit_pca(x, 2).apply(np.zeros((1, 9)))
