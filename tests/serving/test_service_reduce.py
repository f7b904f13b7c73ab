"""POST /embed with ``reduce`` and ``project`` against the real service graph: the reducer
is read from the server's own models directory, verified for the serving model, applied
after the model, and recorded in the answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from sevensense.artifacts.registry import ModelRegistry
from sevensense.embeddings.pca import fit_pca
from sevensense.embeddings.reducers import Reducer, ReducerStore
from sevensense.embeddings.transform import VectorTransform, artifact_sha256
from sevensense.inference.engine import EmbeddingEngine, EmbedOptions
from tests.conftest import audio
from tests.serving.conftest import Service
from tests.serving.test_service_embed import clip_bytes, engine_embeddings, post


@pytest.fixture(scope="module")
def reducer(serving_models: Path, engine: EmbeddingEngine) -> Reducer:
    """A 24-d reducer for the served BirdNET, fitted on 79 real windows (hop 1.5 s), plus
    one labelled for the Perch-contract model, to be refused for BirdNET."""
    results = list(
        engine.embed_file(
            audio("soundscape_birdnet_120s_48k.flac"), options=EmbedOptions(overlap=0.5)
        )
    )
    vectors = np.stack([r.embedding for r in results])
    artifact = ModelRegistry(serving_models).resolve("birdnet-v2.4")
    store = ReducerStore(serving_models)
    made = store.save(
        fit_pca(vectors, 24),
        name="birdnet-test24",
        model_name="birdnet-v2.4",
        model_version="2.4.0",
        model_variant="base",
        model_sha256=artifact_sha256(artifact),
    )
    other = np.random.default_rng(0).normal(size=(40, 1536))
    store.save(
        fit_pca(other, 8),
        name="perch-test8",
        model_name="perch-contract",
        model_version="1.0.0",
        model_variant="base",
        model_sha256="00" * 32,
    )
    return made


def test_reduce_and_project_match_the_engine(
    server: Service, engine: EmbeddingEngine, reducer: Reducer
) -> None:
    clip = clip_bytes(9.0, 42.0)
    direct = engine_embeddings(engine, clip)
    response = post(server, clip, reduce="birdnet-test24")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["embedding_dim"] == 24 and "projection" not in body  # None fields are left out
    assert body["reducer"]["name"] == "birdnet-test24" and body["reducer"]["version"] == "1"
    assert body["reducer"]["sha256"] == reducer.manifest.sha256
    served = np.array([w["embedding"] for w in body["windows"]], dtype=np.float32)
    assert served.shape == (3, 24)
    assert np.abs(served - VectorTransform(reducer).apply(direct)).max() < 1e-4
    assert np.allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    # the quality block still describes the model's own (unit-norm) output
    assert all(w["quality"]["valid"] for w in body["windows"])

    hyper = post(server, clip, reduce="birdnet-test24", project="poincare", curvature="-1")
    assert hyper.status_code == 200, hyper.text
    hb = hyper.json()
    assert hb["projection"] == {"kind": "poincare", "curvature": -1.0, "max_norm": 0.999}
    points = np.array([w["embedding"] for w in hb["windows"]], dtype=np.float32)
    assert np.allclose(np.linalg.norm(points, axis=1), np.tanh(1.0), atol=1e-5)
    assert np.allclose(points / np.tanh(1.0), served, atol=1e-4)

    arrow = post(server, clip, reduce="birdnet-test24", project="poincare", format="arrow")
    assert arrow.status_code == 200
    table = pa.ipc.open_stream(arrow.content).read_all()
    assert table.schema.field("embedding").type.list_size == 24
    assert set(table.column("reducer").to_pylist()) == {"birdnet-test24:1"}
    assert set(table.column("projection").to_pylist()) == {"poincare-c1-m0.999"}
    full = post(server, clip, project="poincare")
    assert full.json()["embedding_dim"] == 1024 and "reducer" not in full.json()


def test_reducer_errors_are_json(server: Service, reducer: Reducer) -> None:
    clip = clip_bytes(3.0, 0.0)
    unknown = post(server, clip, reduce="no-such-reducer")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "reducer_not_found"
    wrong = post(server, clip, reduce="perch-test8")
    assert wrong.status_code == 409
    error = wrong.json()["error"]
    assert error["code"] == "reducer_mismatch" and "perch-contract:1.0.0" in error["message"]
    for form in ({"project": "lorentz"}, {"project": "poincare", "max_norm": "1.5"}):
        bad = post(server, clip, **form)
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
