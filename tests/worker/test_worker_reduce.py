"""The batch worker with ``worker.reduce`` and ``worker.project``: every output is reduced
and projected, says so, and lands under a key of its own space."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from sevensense.artifacts.registry import Artifact
from sevensense.embeddings.pca import fit_pca
from sevensense.embeddings.poincare import Projection
from sevensense.embeddings.reducers import ReducerStore
from sevensense.embeddings.transform import VectorTransform, artifact_sha256
from sevensense.inference.engine import EmbeddingEngine, EmbedOptions
from tests.conftest import AUDIO
from tests.worker.conftest import PREFIX, Stack


def test_worker_writes_reduced_projected_outputs(
    stack: Stack, engine: EmbeddingEngine, birdnet_artifact: Artifact, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    m = birdnet_artifact.manifest
    (models / m.name).mkdir(parents=True)
    (models / m.name / m.version).symlink_to(birdnet_artifact.directory.parent)
    fit_on = engine.embed_file(AUDIO / "xc563936_soundscape_72s_48k.mp3", options=EmbedOptions())
    vectors = np.stack([r.embedding for r in fit_on])
    reducer = ReducerStore(models).save(
        fit_pca(vectors, 12),
        name="worker12",
        model_name=m.name,
        model_version=m.version,
        model_variant=m.variant,
        model_sha256=artifact_sha256(birdnet_artifact),
    )
    recording = AUDIO / "perch_testclip_10s_16k.flac"
    stack.upload(f"{PREFIX}site/clip.flac", recording)
    env = stack.env(
        SEVENSENSE_MODELS_DIR=str(models),
        SEVENSENSE_WORKER__REDUCE="worker12",
        SEVENSENSE_WORKER__PROJECT="poincare",
    )
    rc, _, log = stack.run(env=env)
    assert rc == 0, log[-3000:]
    transform = VectorTransform(reducer, Projection())
    (out,) = stack.outputs()
    assert out.startswith("embeddings/site/clip.flac.") and f".{transform.space_key}." in out
    table = stack.read_output(out)
    assert table.schema.field("embedding").type.list_size == 12
    assert set(table.column("reducer").to_pylist()) == {"worker12:1"}
    direct = np.stack([r.embedding for r in engine.embed_file(recording, options=EmbedOptions())])
    served = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    assert np.abs(served - transform.apply(direct)).max() < 1e-4
    raw = stack.s3.get_object(Bucket=stack.out_bucket, Key=out)["Body"].read()
    meta = pq.ParquetFile(io.BytesIO(raw)).metadata.metadata[b"sevensense"]
    assert f'"space_key": "{transform.space_key}"'.encode() in meta
