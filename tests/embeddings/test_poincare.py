"""The Poincaré ball against closed forms, in float32 and float64."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sevensense.embeddings.poincare import Projection, poincare_distance, to_poincare
from sevensense.errors import RequestError

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 1e-4, np.float64: 1e-10}


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_map_closed_form(dtype: type) -> None:
    rng = np.random.default_rng(0)
    for c in (1.0, 0.5, 2.0):
        v = (rng.normal(size=(64, 16)) * rng.uniform(0.01, 0.5, size=(64, 1))).astype(dtype)
        y = to_poincare(v, curvature=c)
        assert y.dtype == dtype
        r = np.sqrt(c) * np.linalg.norm(v.astype(np.float64), axis=1, keepdims=True)
        expected = np.tanh(r) / r * v.astype(np.float64)
        assert np.allclose(y, expected, atol=TOL[dtype] * 10, rtol=TOL[dtype] * 10)
        # the map is a bijection from tangent to ball: d(0, exp0(v)) = 2‖v‖ (the origin's
        # conformal factor is 2)
        d0 = poincare_distance(np.zeros_like(y), y, curvature=c)
        assert np.allclose(d0, 2 * r[:, 0] / np.sqrt(c), rtol=TOL[dtype] * 100)


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_maps_to_origin_and_small_vectors_are_exact(dtype: type) -> None:
    z = to_poincare(np.zeros((3, 8), dtype=dtype))
    assert np.array_equal(z, np.zeros((3, 8), dtype=dtype))
    tiny = np.full(8, 1e-30 if dtype is np.float64 else 1e-20, dtype=dtype)
    out = to_poincare(tiny)
    assert np.all(np.isfinite(out))
    assert np.allclose(out, tiny, rtol=1e-6)  # tanh(r)/r → 1: no division by ~0


@pytest.mark.parametrize("dtype", DTYPES)
def test_clamp_and_huge_inputs_stay_finite(dtype: type) -> None:
    big = np.array([[3e30, -4e30, 0.0], [30.0, 40.0, 0.0]]).astype(dtype)
    for c, m in ((1.0, 0.999), (4.0, 0.9), (-1.0, 0.999)):
        y = to_poincare(big, curvature=c, max_norm=m)
        assert np.all(np.isfinite(y))
        norms = np.linalg.norm(y.astype(np.float64), axis=1)
        assert np.allclose(norms, m / math.sqrt(abs(c)), rtol=1e-6)
        assert np.allclose(y[0] / norms[0], [0.6, -0.8, 0.0], atol=1e-6)  # direction kept


def test_unit_embeddings_land_on_one_sphere() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 32))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert np.allclose(np.linalg.norm(to_poincare(x), axis=1), math.tanh(1.0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_distance_axioms_on_random_points(dtype: type) -> None:
    rng = np.random.default_rng(2)
    pts = to_poincare(rng.normal(size=(60, 10)) * rng.uniform(0.05, 4.0, size=(60, 1)))
    pts = pts.astype(dtype)
    d = poincare_distance(pts[:, None, :], pts[None, :, :])
    assert d.dtype == dtype and d.shape == (60, 60)
    assert np.all(np.diag(d) == 0)  # d(x, x) = 0 exactly
    assert np.allclose(d, d.T, rtol=TOL[dtype], atol=TOL[dtype])
    assert np.all(d[~np.eye(60, dtype=bool)] > 0)
    # triangle inequality for every triple
    via = d[:, :, None] + d[None, :, :]  # d(i,j) + d(j,k) at [i, j, k]
    assert np.all(d[:, None, :] <= via + 1e-4 * (1 + via))
    ref = poincare_distance(pts.astype(np.float64)[:, None], pts.astype(np.float64)[None])
    assert np.allclose(d, ref, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)


def test_distance_closed_form_on_a_diameter() -> None:
    """Points ±a on one axis: d = 2·artanh(a) − 2·artanh(−a) = 4·artanh(a) (c = 1)."""
    for a in (0.1, 0.5, 0.9, 0.999):
        u, v = np.array([a, 0.0]), np.array([-a, 0.0])
        assert poincare_distance(u, v) == pytest.approx(4 * math.atanh(a), rel=1e-12)
    # curvature c: the ball of radius 1/√c, d = (1/√c)·(closed form at √c·x)
    c, a = 4.0, 0.3
    got = poincare_distance(np.array([a, 0.0]), np.array([0.0, 0.0]), curvature=c)
    assert got == pytest.approx(2 * math.atanh(math.sqrt(c) * a) / math.sqrt(c), rel=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_near_and_on_the_boundary_is_finite(dtype: type) -> None:
    edge = np.array([[0.999999, 0.0], [1.0, 0.0], [0.0, 1.0], [1.5, 0.0]], dtype=dtype)
    origin = np.zeros(2, dtype=dtype)
    d = poincare_distance(origin, edge)
    assert np.all(np.isfinite(d)) and np.all(d > 5)
    pair = poincare_distance(edge[1], edge[2])
    assert np.isfinite(pair) and pair > d[0]
    # two clamped points close together: small, finite, no cancellation to NaN
    p = to_poincare(np.array([[1e3, 0.0], [1e3, 1.0]], dtype=dtype))
    assert np.isfinite(poincare_distance(p[0], p[1]))


def test_projection_object_and_refusals() -> None:
    p = Projection(curvature=1.0, max_norm=0.999)
    assert p.key == "poincare-c1-m0.999"
    assert p.describe() == {"kind": "poincare", "curvature": 1.0, "max_norm": 0.999}
    for bad in ({"curvature": 0.0}, {"curvature": float("nan")}, {"max_norm": 1.0}):
        with pytest.raises(RequestError):
            Projection(**bad)  # type: ignore[arg-type]
