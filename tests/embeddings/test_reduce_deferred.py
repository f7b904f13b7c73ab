"""A deferred request keeps its reducer and projection: the gateway's submission carries
them on the queue and the worker's handler applies them as the gateway would have."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sevensense.artifacts.registry import Artifact
from sevensense.embeddings.pca import fit_pca
from sevensense.embeddings.poincare import Projection
from sevensense.embeddings.reducers import ReducerStore
from sevensense.embeddings.transform import VectorTransform, artifact_sha256
from sevensense.inference.engine import EmbeddingEngine, EmbedOptions
from sevensense.jobs.records import DeferredRequest, JobStatus
from sevensense.jobs.store import JobStore
from sevensense.jobs.submit import Deferrer
from sevensense.queues.sqlite import SqliteQueue
from sevensense.storage.objects import open_store
from sevensense.worker.job_handler import DeferredHandler
from tests.conftest import audio, make_settings


def test_deferred_request_is_reduced_and_projected_by_the_worker(
    tmp_path: Path, engine: EmbeddingEngine, birdnet_artifact: Artifact
) -> None:
    models = tmp_path / "models"
    m = birdnet_artifact.manifest
    (models / m.name).mkdir(parents=True)
    (models / m.name / m.version).symlink_to(birdnet_artifact.directory.parent)
    fit_on = engine.embed_file(audio("xc563936_soundscape_72s_48k.mp3"), options=EmbedOptions())
    reducer = ReducerStore(models).save(
        fit_pca(np.stack([r.embedding for r in fit_on]), 8),
        name="deferred8",
        model_name=m.name,
        model_version=m.version,
        model_variant=m.variant,
        model_sha256=artifact_sha256(birdnet_artifact),
    )
    jobs = JobStore(open_store(str(tmp_path / "payloads")))
    queue = SqliteQueue(tmp_path / "queue.sqlite3")
    recording = audio("perch_testclip_10s_16k.flac")
    asked = {"reduce": "deferred8", "project": "poincare", "curvature": 1.0, "max_norm": 0.9}
    with recording.open("rb") as source:
        record = Deferrer(jobs, queue).submit(
            source,
            model=str(m.identity),
            options=EmbedOptions(),
            owner="partner",
            reason="test",
            transform=asked,
        )
    assert record.status == JobStatus.QUEUED
    (message,) = queue.receive(wait_s=0)
    request = DeferredRequest.model_validate_json(message.body)
    assert request.transform == asked

    settings = make_settings()
    settings.models_dir = models
    response = DeferredHandler(EmbeddingEngine(settings), jobs, 3).compute(request)
    assert response.embedding_dim == 8 and response.reducer is not None
    assert response.reducer.sha256 == reducer.manifest.sha256
    assert response.projection is not None and response.projection.max_norm == 0.9
    served = np.array([w.embedding for w in response.windows], dtype=np.float32)
    direct = np.stack([r.embedding for r in engine.embed_file(recording, options=EmbedOptions())])
    expected = VectorTransform(reducer, Projection(max_norm=0.9)).apply(direct)
    assert np.abs(served - expected).max() < 1e-4
