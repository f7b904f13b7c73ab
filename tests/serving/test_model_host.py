"""The model service's batch logic without BentoML: mixed versions in one batch, isolation
of a failing group, bounded loaded versions, and the default-model choice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sevensense.artifacts.catalog import default_model
from sevensense.artifacts.manifest import OutputRole
from sevensense.artifacts.registry import ModelRegistry
from sevensense.inference.engine import EmbeddingEngine
from sevensense.serving.model_service.host import ModelHost
from sevensense.serving.model_service.rpc import WindowItem, from_bytes, to_bytes
from tests.conftest import make_settings


@pytest.fixture(scope="module")
def worker(serving_models: Path) -> ModelHost:
    settings = make_settings()
    settings.models_dir = serving_models
    settings.serving.max_loaded_versions = 2
    w = ModelHost("cpu", settings)
    w.start(["perch-contract:1.0.0:base"])
    return w


def windows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.1, (n, 160_000))).astype(np.float32)


def test_mixed_versions_in_one_batch_match_separate_runs(
    worker: ModelHost, serving_models: Path
) -> None:
    a, b = windows(3, 1), windows(2, 2)
    items = [WindowItem(model="perch-contract:1.0.0:base", samples=to_bytes(w)) for w in a]
    items.insert(1, WindowItem(model="perch-contract:1.1.0:base", samples=to_bytes(b[0])))
    items.append(WindowItem(model="perch-contract:1.1.0:base", samples=to_bytes(b[1]), logits=True))
    out = worker.infer(items)
    assert [o.model.version for o in out] == ["1.0.0", "1.1.0", "1.0.0", "1.0.0", "1.1.0"]
    assert all(o.batch_size == 5 and o.error is None for o in out)
    engine = EmbeddingEngine(worker.settings)
    for version, batch, rows in (("1.0.0", a, [0, 2, 3]), ("1.1.0", b, [1, 4])):
        model = engine.model(f"perch-contract:{version}:base")
        direct = engine.run_batch(model, batch, list(model.output_names))
        served = np.stack([from_bytes(out[r].embedding) for r in rows])
        assert np.abs(served - direct[OutputRole.EMBEDDING]).max() < 1e-5
    assert out[4].logits is not None and len(from_bytes(out[4].logits)) == 14_795
    assert out[1].logits is None


def test_a_failing_group_fails_only_its_own_windows(worker: ModelHost) -> None:
    good = [
        WindowItem(model="perch-contract:1.0.0:base", samples=to_bytes(w)) for w in windows(2, 3)
    ]
    bad_version = WindowItem(model="perch-contract:9.9.9:base", samples=to_bytes(windows(1, 4)[0]))
    bad_shape = WindowItem(
        model="birdnet-v2.4:2.4.0:base", samples=to_bytes(np.zeros(10, np.float32))
    )
    out = worker.infer([good[0], bad_version, bad_shape, good[1]])
    assert out[0].error is None and out[3].error is None
    assert out[1].error and "9.9.9" in out[1].error
    assert out[2].error and "samples" in out[2].error


def test_loaded_versions_are_bounded(worker: ModelHost) -> None:
    for version in ("1.0.0", "1.1.0", "1.0.0"):
        assert worker.prepare(f"perch-contract:{version}:base").error is None
    loaded = {
        m.identity.version
        for m in worker.engine.sessions.loaded()
        if m.identity.name == "perch-contract"
    }
    assert loaded == {"1.0.0", "1.1.0"}
    failed = None
    try:
        worker.prepare("perch-contract:1.2.0:base")  # corrupt on disk
    except Exception as exc:
        failed = exc
    assert failed is not None and "sha256" in str(failed)
    assert worker.status().ready


def test_default_model_is_perch_when_its_weights_are_present(
    tmp_path: Path, serving_models: Path
) -> None:
    settings = make_settings()
    registry = ModelRegistry(serving_models)
    assert default_model(settings, registry.artifacts()) == "birdnet-v2.4"
    source = registry.resolve("perch-contract:1.0.0")
    target = tmp_path / "perch-v2" / "2.0.0" / "base"
    shutil.copytree(source.directory, target, symlinks=True)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["name"], manifest["version"] = "perch-v2", "2.0.0"
    (target / "manifest.json").write_text(json.dumps(manifest))
    assert default_model(settings, ModelRegistry(tmp_path).artifacts()) == "perch-v2"
    settings.serving.default_model = "birdnet-v2.4"
    assert default_model(settings, ModelRegistry(tmp_path).artifacts()) == "birdnet-v2.4"
