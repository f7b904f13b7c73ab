"""Reducer artifacts: round trip, verification like models, refusal for another model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sevensense.artifacts.registry import ModelRegistry
from sevensense.embeddings.pca import fit_pca
from sevensense.embeddings.reducers import DATA_NAME, MANIFEST_NAME, ReducerStore
from sevensense.embeddings.transform import IDENTITY, load_transform
from sevensense.errors import (
    ChecksumMismatchError,
    ReducerMismatchError,
    ReducerNotFoundError,
    RequestError,
)
from tests.conftest import make_settings

SHA = "ab" * 32


def _store(tmp_path: Path) -> tuple[ReducerStore, np.ndarray]:
    x = np.random.default_rng(0).normal(size=(400, 32)).astype(np.float32)
    store = ReducerStore(tmp_path)
    store.save(
        fit_pca(x, 8),
        name="toy-8",
        model_name="toy",
        model_version="1.0.0",
        model_variant="base",
        model_sha256=SHA,
        sources=["synthetic"],
    )
    return store, x


def test_round_trip_and_versions(tmp_path: Path) -> None:
    store, x = _store(tmp_path)
    reducer = store.resolve("toy-8")
    m = reducer.manifest
    assert (m.name, m.version, m.in_dim, m.out_dim, m.n_windows) == ("toy-8", "1", 32, 8, 400)
    assert (m.model_name, m.model_version, m.model_sha256) == ("toy", "1.0.0", SHA)
    assert 0 < m.explained_variance < 1
    assert reducer.directory == tmp_path / "reducers" / "toy-8" / "1"
    assert np.allclose(reducer.pca.apply(x[:5]), fit_pca(x, 8).apply(x[:5]), atol=1e-7)
    # a second fit is version 2 and becomes the default; the first stays addressable
    store.save(
        fit_pca(x[:200], 8),
        name="toy-8",
        model_name="toy",
        model_version="1.0.0",
        model_variant="base",
        model_sha256=SHA,
    )
    assert store.resolve("toy-8").manifest.version == "2"
    assert store.resolve("toy-8:1").manifest.n_windows == 400
    assert [r.ref for r in store.manifests()] == ["toy-8:1", "toy-8:2"]
    with pytest.raises(RequestError):
        store.save(
            fit_pca(x, 8),
            name="toy-8",
            version="1",
            model_name="toy",
            model_version="1.0.0",
            model_variant="base",
            model_sha256=SHA,
        )


def test_reducers_do_not_disturb_the_model_registry(tmp_path: Path) -> None:
    _store(tmp_path)
    assert ModelRegistry(tmp_path).artifacts() == []


def test_checksum_mismatch_is_refused(tmp_path: Path) -> None:
    store, _ = _store(tmp_path)
    data = tmp_path / "reducers" / "toy-8" / "1" / DATA_NAME
    raw = bytearray(data.read_bytes())
    raw[-100] ^= 0xFF  # same size, one byte changed
    data.write_bytes(bytes(raw))
    with pytest.raises(ChecksumMismatchError) as err:
        store.resolve("toy-8", use_cache=False)
    assert err.value.http_status == 409 and err.value.code == "checksum_mismatch"


def test_unknown_and_mismatched(tmp_path: Path) -> None:
    _store(tmp_path)
    settings = make_settings()
    settings.models_dir = tmp_path
    with pytest.raises(ReducerNotFoundError) as missing:
        load_transform(settings, "toy", "1.0.0", SHA, reduce="nope")
    assert missing.value.http_status == 404 and "toy-8" in missing.value.message
    with pytest.raises(ReducerNotFoundError):
        load_transform(settings, "toy", "1.0.0", SHA, reduce="toy-8:7")
    for name, version, sha in (
        ("toy", "2.0.0", SHA),
        ("other", "1.0.0", SHA),
        ("toy", "1.0.0", "cd" * 32),
    ):
        with pytest.raises(ReducerMismatchError) as wrong:
            load_transform(settings, name, version, sha, reduce="toy-8")
        assert wrong.value.http_status == 409 and wrong.value.code == "reducer_mismatch"
    t = load_transform(settings, "toy", "1.0.0", SHA, reduce="toy-8")
    with pytest.raises(ReducerMismatchError):
        t.out_dim(16)
    manifest = json.loads((tmp_path / "reducers" / "toy-8" / "1" / MANIFEST_NAME).read_text())
    assert manifest["sha256"] == t.reducer.manifest.sha256  # type: ignore[union-attr]


def test_transform_space_keys_and_zero_rows(tmp_path: Path) -> None:
    _store(tmp_path)
    settings = make_settings()
    settings.models_dir = tmp_path
    assert IDENTITY.space_key == "full" and IDENTITY.metric == "cosine"
    both = load_transform(settings, "toy", "1.0.0", SHA, reduce="toy-8", project="poincare")
    sha = both.reducer.manifest.sha256  # type: ignore[union-attr]
    assert both.space_key == f"pca-toy-8-1-{sha[:12]}+poincare-c1-m0.999"
    assert both.metric == "poincare" and both.out_dim(32) == 8
    proj = load_transform(
        settings, "toy", "1.0.0", SHA, project="poincare", curvature=2, max_norm=0.9
    )
    assert proj.space_key == "poincare-c2-m0.9" and proj.out_dim(32) == 32
    x = np.random.default_rng(5).normal(size=(4, 32)).astype(np.float32)
    x[2] = 0.0
    y = both.apply(x)
    assert y.dtype == np.float32 and y.shape == (4, 8)
    assert np.array_equal(y[2], np.zeros(8, np.float32))  # a zero vector stays "no vector"
    assert np.allclose(np.linalg.norm(y[[0, 1, 3]], axis=1), np.tanh(1.0), atol=1e-6)
    with pytest.raises(RequestError):
        load_transform(settings, "toy", "1.0.0", SHA, project="lorentz")
