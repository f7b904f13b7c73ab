"""Per-window normalisation for each model contract and the ADR's options."""

from __future__ import annotations

import numpy as np

from sevensense.audio.normalize import NormalizationSpec, normalize


def test_perch_contract_mean_zero_peak_quarter() -> None:
    x = (np.random.default_rng(0).standard_normal(160_000) * 0.03 + 0.2).astype(np.float32)
    y = normalize(x, NormalizationSpec.perch())
    assert abs(float(y.mean())) < 1e-6
    assert np.isclose(np.abs(y).max(), 0.25, atol=1e-6)
    assert y is not x and np.isclose(x.mean(), 0.2, atol=0.01)  # input untouched


def test_raw_is_identity() -> None:
    x = np.linspace(-2, 2, 100, dtype=np.float32)
    assert np.array_equal(normalize(x, NormalizationSpec.raw()), x)


def test_rms_and_clip() -> None:
    x = np.random.default_rng(1).standard_normal(10_000).astype(np.float32)
    y = normalize(x, NormalizationSpec(method="rms", target_rms=0.1))
    assert np.isclose(np.sqrt(np.mean(y.astype(np.float64) ** 2)), 0.1, rtol=1e-4)
    big = normalize(x * 10, NormalizationSpec(method="none", clip=True))
    assert big.max() <= 1.0 and big.min() >= -1.0


def test_silence_is_not_blown_up() -> None:
    for spec in (NormalizationSpec.perch(), NormalizationSpec(method="rms")):
        y = normalize(np.zeros(1000, np.float32), spec)
        assert np.all(y == 0) and np.isfinite(y).all()
