"""`sevensense reduce fit` and `embed --reduce/--project`, in process (click's runner: the
real command code, without paying the interpreter start per call) on real recordings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from sevensense.artifacts.registry import Artifact
from sevensense.cli import main
from sevensense.embeddings.reducers import ReducerStore
from sevensense.embeddings.transform import VectorTransform
from tests.conftest import AUDIO, audio

CLIP = "xc563936_soundscape_72s_48k.mp3"


@pytest.fixture(scope="module")
def models(
    tmp_path_factory: pytest.TempPathFactory, birdnet_artifact: Artifact, perch_artifact: Artifact
) -> Path:
    """The built models linked into a directory of the test's own, so reducers written
    here never reach the shared ``models/``."""
    root = tmp_path_factory.mktemp("reduce-models")
    for artifact in (birdnet_artifact, perch_artifact):
        m = artifact.manifest
        (root / m.name).mkdir()
        (root / m.name / m.version).symlink_to(artifact.directory.parent)
    return root


def cli(models: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--models-dir", str(models), *args], catch_exceptions=False)


def column(path: Path, name: str) -> np.ndarray:
    return np.array(pq.read_table(path).column(name).to_pylist())


def test_fit_embed_reduced_and_refusals(models: Path, tmp_path: Path) -> None:
    full = tmp_path / "full.parquet"
    done = cli(models, "embed", str(audio(CLIP)), "--hop", "1.5", "--out", str(full), "--quiet")
    assert done.exit_code == 0, done.output
    rows = pq.read_table(full).num_rows
    assert rows > 40  # 72 s at a 1.5-s hop

    # Parquet and recordings together: its windows + the nine fish clips at hop 1.5 s
    fit = cli(
        models, "reduce", "fit", "--dim", "16", "--hop", "1.5", "--name", "xc16",
        str(full), str(AUDIO / "fish_queries_16k"),
    )  # fmt: skip
    assert fit.exit_code == 0, fit.output
    store = ReducerStore(models)
    reducer = store.resolve("xc16")
    m = reducer.manifest
    assert (m.model_name, m.model_version, m.in_dim, m.out_dim) == (
        "birdnet-v2.4",
        "2.4.0",
        1024,
        16,
    )
    assert m.n_windows > rows  # the fish windows count too
    assert f"fitted on {m.n_windows} windows" in fit.output and str(reducer.directory) in fit.output
    assert f"explained variance kept {m.explained_variance:.4f}" in fit.output

    reduced = tmp_path / "reduced.parquet"
    done = cli(
        models, "embed", str(audio(CLIP)), "--hop", "1.5", "--reduce", "xc16",
        "--project", "poincare", "--curvature", "2", "--out", str(reduced), "--quiet",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert pq.read_schema(reduced).field("embedding").type.list_size == 16
    assert set(column(reduced, "reducer")) == {"xc16:1"}
    assert set(column(reduced, "projection")) == {"poincare-c2-m0.999"}
    meta = json.loads(pq.read_metadata(reduced).metadata[b"sevensense"])
    assert meta["transform"]["space_key"].startswith(f"pca-xc16-1-{m.sha256[:12]}+poincare-c2")
    from sevensense.embeddings.poincare import Projection

    expected = VectorTransform(reducer, Projection(curvature=2.0)).apply(
        column(full, "embedding").astype(np.float32)
    )
    assert np.abs(column(reduced, "embedding") - expected).max() < 1e-4
    assert (column(reduced, "norm") > 0.99).all()  # quality still of the model's output

    listed = cli(models, "reduce", "list", "--json")
    assert [r["name"] for r in json.loads(listed.output)] == ["xc16"]

    wrong = cli(
        models, "embed", str(audio("birdnet_sample_3s_48k.wav")), "--model", "perch-contract",
        "--reduce", "xc16", "--out", str(tmp_path / "x.parquet"), "--quiet",
    )  # fmt: skip
    assert wrong.exit_code == 2
    assert "[reducer_mismatch]" in wrong.output and "birdnet-v2.4:2.4.0" in wrong.output
    unknown = cli(models, "embed", str(full), "--reduce", "nope", "--out", str(tmp_path / "y"))
    assert unknown.exit_code == 2 and "[reducer_not_found]" in unknown.output
    other = cli(models, "reduce", "fit", "--model", "perch-contract", "--dim", "4", str(full))
    assert other.exit_code == 2 and "[reducer_mismatch]" in other.output
