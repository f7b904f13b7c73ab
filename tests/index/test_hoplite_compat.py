"""An index space written by sevensense, opened by Google's own perch-hoplite reader.

perch-hoplite runs from its own virtualenv (``.venv-hoplite``, made once by this fixture,
pinned): its full dependency set is 174 packages, but its ``db`` package needs only these.
The peer script opens the directory with ``SQLiteUSearchDB.create``, reads the
``model_config`` and ``audio_sources`` metadata its agile-modeling tools read, sees our
columns as extra columns, and searches with hoplite's own code: the same neighbours as ours,
after a compaction has folded the append log (half of the windows) into ``usearch.index``.
"""

from __future__ import annotations

import json
import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest

from sevensense.index.hoplite import HopliteIndex
from sevensense.index.records import EntryBatch, Scope, SpaceInfo, SpaceKey
from sevensense.settings import IndexSettings
from tests.conftest import REPO
from tests.index.conftest import RealWindows
from tests.index.test_backends import metas

HOPLITE_REQUIREMENTS = (
    "numpy==2.4.6",
    "ml-collections==1.1.0",
    "etils[epath]==1.15.0",
    "absl-py==2.5.1",
    "tqdm==4.70.1",
    "usearch==2.26.6",
    "fsspec==2026.9.0",
    "PyYAML==6.0.4",
    "typing_extensions==4.16.0",
    "zipp==4.1.2",
)
HOPLITE = "perch-hoplite==1.0.2"
VENV = REPO / ".venv-hoplite"
RUNNER = Path(__file__).parents[1] / "peers" / "hoplite_search.py"


@pytest.fixture(scope="session")
def hoplite_python() -> Path:
    python = VENV / "bin" / "python"
    stamp = VENV / ".requirement"
    want = "\n".join((HOPLITE, *HOPLITE_REQUIREMENTS))
    if not (python.exists() and stamp.exists() and stamp.read_text() == want):
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, "--no-deps", HOPLITE], check=True, timeout=900)
        subprocess.run([*pip, *HOPLITE_REQUIREMENTS], check=True, timeout=900)
        stamp.write_text(want)
    return python


def test_hoplite_reads_and_searches_our_index(
    hoplite_python: Path, real_windows: RealWindows, tmp_path: Path
) -> None:
    key = SpaceKey(model_name="birdnet-v2.4", model_version="2.4.0")
    info = SpaceInfo(
        key=key, dim=real_windows.vectors.shape[1], sample_rate=48000, window_s=3.0, hop_s=1.5
    )
    index = HopliteIndex(tmp_path, "compat", IndexSettings())
    half = len(real_windows.vectors) // 2
    every = metas(real_windows)
    index.add(info, EntryBatch(real_windows.vectors[:half], every[:half]))
    index.compact()  # the first half in usearch.index, the rest in the append log
    index.add(info, EntryBatch(real_windows.vectors[half:], every[half:]))
    index.delete_recording("other/sample", Scope.everyone())  # hoplite must not see it
    assert list((tmp_path / "compat" / key.slug).glob("vectors.1.log"))
    assert set(index.compact()) == {key.slug}  # what `sevensense index compact` runs
    queries = real_windows.vectors[::15]
    np.save(tmp_path / "queries.npy", queries)
    ours = index.search(key, queries, 10, Scope.everyone())
    index.close()

    out = tmp_path / "hoplite.json"
    subprocess.run(
        [
            str(hoplite_python),
            str(RUNNER),
            str(tmp_path / "compat" / key.slug),
            str(tmp_path / "queries.npy"),
            "10",
            str(out),
        ],
        check=True,
        timeout=300,
    )
    theirs = json.loads(out.read_text())
    n_sample = sum(1 for s in real_windows.sources if s == "birdnet_sample_3s_48k")
    assert theirs["embedding_dim"] == info.dim == theirs["model_embedding_dim"]
    assert theirs["count"] == len(real_windows.vectors) - n_sample
    assert theirs["model_key"] == "sevensense:birdnet-v2.4"
    # the fields of hoplite's agile.source_info.AudioSourceConfig and agile.embed.ModelConfig
    [glob] = theirs["audio_globs"]
    assert set(glob) == {
        "dataset_name",
        "base_path",
        "file_glob",
        "min_audio_len_s",
        "target_sample_rate_hz",
        "shard_len_s",
        "max_shards_per_file",
    }
    assert glob["dataset_name"] == "sevensense"
    assert set(theirs["model_config"]) == {
        "model_key",
        "embedding_dim",
        "model_config",
        "logits_key",
        "logits_idxes",
    }
    assert theirs["model_config"]["model_config"]["sample_rate"] == 48000
    assert theirs["projects"] == ["a", "b"]  # tenants are hoplite projects
    assert set(theirs["extra_columns"]["windows"]) == {"start_ms", "tenant"}
    assert set(theirs["extra_columns"]["recordings"]) == {"source", "tenant"}
    for mine, hers in zip(ours, theirs["results"], strict=True):
        assert [(n.recording_id, n.start_s, n.end_s) for n in mine] == [
            (h["filename"], h["start_s"], h["end_s"]) for h in hers
        ]
        assert np.allclose([n.score for n in mine], [h["score"] for h in hers], atol=2e-3)
        assert all(h["filename"] != "other/sample" for h in hers)
