"""`sevensense check` (ADR-007 Appendix B) on real models and deliberately broken ones.

The broken artifacts are BirdNET's real graph and differ from a healthy copy only in their
embedding output (tests/broken_models.py): one collapses onto two dimensions, one emits NaN
whenever a window starts on a negative sample. A small reference set (links to
../shared/audio, never copies) keeps every run to about a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sevensense.artifacts.registry import Artifact, ModelRegistry
from sevensense.cli import main
from sevensense.inference.engine import EmbeddingEngine
from sevensense.quality_gate import checklist, store
from sevensense.quality_gate.checklist import birdnet_item, duplicates_item, spectrum
from sevensense.quality_gate.store import checked, load_stored
from tests.broken_models import NAME, build_gate_model
from tests.conftest import AUDIO, make_settings
from tests.serving.conftest import link_artifact

REFERENCE = (
    "perch_clap_21s_16k.wav",  # the lossless source for the duplicate item
    "birdnet_sample_3s_48k.wav",
    "fish_queries_16k/Croak.wav",
    "fish_queries_16k/Laugh.wav",
    "perch_testclip_10s_16k.flac",
    "soundscape_birdnet_120s_48k.flac",
)
LABELLED = ("labelled/common_yellowthroat.mp3", "labelled/opensoundscape_birds_10s_32k.wav")


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reference")
    (root / "labelled").mkdir()
    for name in REFERENCE:
        (root / Path(name).name).symlink_to(AUDIO / name)
    for name in LABELLED:
        (root / name).symlink_to(AUDIO / name)
    return root


@pytest.fixture(scope="module")
def gate_models(tmp_path_factory: pytest.TempPathFactory, birdnet_artifact: Artifact) -> Path:
    root = tmp_path_factory.mktemp("gate-models")
    link_artifact(birdnet_artifact, root)  # the verifier the cross-validation item runs
    registry = ModelRegistry(root)
    build_gate_model(registry, birdnet_artifact, "1.0.0", "none")
    build_gate_model(registry, birdnet_artifact, "2.0.0", "collapsed")
    build_gate_model(registry, birdnet_artifact, "3.0.0", "nan")
    return root


def check(models: Path, *args: str) -> tuple[int, dict]:
    run = CliRunner().invoke(main, ["--models-dir", str(models), "check", *args, "--json"])
    try:
        body = json.loads(run.output)
    except json.JSONDecodeError:
        body = {"output": run.output}
    return run.exit_code, body


def statuses(body: dict) -> dict[str, str]:
    return {i["id"]: i["status"] for i in body["items"]}


def test_healthy_model_passes_every_item(gate_models: Path, reference_dir: Path) -> None:
    code, body = check(gate_models, f"{NAME}:1.0.0", "--audio", str(reference_dir))
    assert code == 0, body
    found = statuses(body)
    assert list(found) == [i for i, _ in checklist.ITEMS]
    assert set(found.values()) == {"pass"}
    figures = {i["id"]: i["figure"] for i in body["items"]}
    assert figures["batch_consistency"]["max_abs_delta"] <= 1e-5
    assert figures["duplicates"]["min_cosine"] > 0.99
    assert figures["birdnet_agreement"]["mean_agreement"] > 0.99  # BirdNET's own species head
    assert figures["isotropy"]["participation_ratio"] >= 2.5
    assert figures["model_version"]["parquet_rows"] == figures["model_version"]["windows"] > 0


def test_collapsed_embedding_fails_isotropy(gate_models: Path, reference_dir: Path) -> None:
    code, body = check(gate_models, f"{NAME}:2.0.0", "--audio", str(reference_dir))
    assert code == 1
    failed = {k for k, v in statuses(body).items() if v == "fail"}
    assert failed == {"isotropy"}
    iso = next(i for i in body["items"] if i["id"] == "isotropy")["figure"]
    assert iso["near_zero_variance_share"] > 0.99 and iso["participation_ratio"] <= 2.0
    assert body["passed"] is False


def test_nan_embedding_fails_the_finite_item(gate_models: Path, reference_dir: Path) -> None:
    code, body = check(gate_models, f"{NAME}:3.0.0", "--audio", str(reference_dir))
    assert code == 1
    found = statuses(body)
    assert found["finite"] == "fail"
    finite = next(i for i in body["items"] if i["id"] == "finite")["figure"]
    assert 0 < finite["with_nan"] < finite["windows"]
    assert found["model_version"] == found["silence"] == "pass"  # silence starts at 0: no NaN


def test_could_not_run_exits_2(gate_models: Path, tmp_path: Path) -> None:
    assert check(gate_models, "no-such-model")[0] == 2
    assert check(gate_models, f"{NAME}:1.0.0", "--audio", str(tmp_path / "none"))[0] == 2
    (tmp_path / "empty").mkdir()
    assert check(gate_models, f"{NAME}:1.0.0", "--audio", str(tmp_path / "empty"))[0] == 2


def test_result_is_stored_by_sha256_and_checklist_version(
    gate_models: Path, reference_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings()
    settings.models_dir = gate_models
    settings.checks.audio_dir = reference_dir
    engine = EmbeddingEngine(settings)
    artifact = engine.registry.resolve(f"{NAME}:2.0.0")
    first = checked(engine, artifact).result
    assert (artifact.directory / store.RESULT_FILE).is_file()
    again = checked(engine, artifact).result
    assert again.checked_at == first.checked_at and again.failed() == ["isotropy"]
    other_weights = Artifact(
        artifact.manifest.model_copy(update={"sha256": "0" * 64}), artifact.directory
    )
    assert load_stored(other_weights) is None
    monkeypatch.setattr(store, "CHECKLIST_VERSION", "next")
    assert load_stored(artifact) is None  # so checked() runs the checklist again


def test_birdnet_cross_validation(engine: EmbeddingEngine, reference_dir: Path) -> None:
    labelled = sorted((reference_dir / "labelled").iterdir())
    quantized = engine.model("birdnet-v2.4:2.4.0:quantized")
    result = birdnet_item(engine, quantized, labelled, 0.8)
    assert result.status == "pass", result
    mean = result.figure["mean_agreement"]
    assert isinstance(mean, float) and mean > 0.8
    itself = birdnet_item(engine, engine.model("birdnet-v2.4"), labelled, 0.8)
    assert itself.status == "n/a" and itself.detail


def test_spectrum_and_duplicates_maths() -> None:
    rng = np.random.default_rng(0)
    spread = rng.normal(size=(200, 16))
    share, ratio = spectrum(spread)
    assert share == 0.0 and ratio > 12
    line = np.outer(rng.normal(size=200), rng.normal(size=16))
    assert spectrum(line)[1] == pytest.approx(1.0, abs=1e-6)
    flat = spread.copy()
    flat[:, 4:] = 0.5
    assert spectrum(flat)[0] == pytest.approx(0.75)
    same = duplicates_item(spread, {"copy": spread.copy()})
    assert same.status == "pass"
    worse = duplicates_item(spread, {"copy": spread + rng.normal(size=spread.shape)})
    assert worse.status == "fail"
    assert duplicates_item(spread, {"short": spread[:5]}).status == "fail"
