"""The request planner's rules, once for every face: real artifacts, real range model.

The faces (gateway, stream, S3 worker, CLI) turn their input into ``RequestOptions`` and get
the same plan or the same typed error; the worker's copy of the species-list rule used to
lack the "model has no class labels" check, so a test here runs the worker itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import boto3
import pytest

from sevensense.artifacts.manifest import MANIFEST_NAME
from sevensense.artifacts.registry import Artifact, ModelRegistry
from sevensense.errors import ModelError, RequestError, SpeciesFilterError
from sevensense.inference.engine import EmbeddingEngine
from sevensense.planning.options import (
    MAX_OVERLAP,
    OFFLINE,
    SERVICE_LIMITS,
    PlanLimits,
    RequestOptions,
)
from sevensense.planning.plan import Planner
from sevensense.settings import SpeciesFilterSettings, WorkerSettings
from sevensense.worker.s3_batch import S3BatchHandler
from tests.conftest import MODELS, make_settings


@pytest.fixture(scope="module")
def planner() -> Planner:
    return Planner(make_settings())


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry whose only model has no class labels: perch-contract's graph, with the
    labels taken out of its manifest (an embedding-only model)."""
    root = tmp_path_factory.mktemp("unlabelled")
    src = MODELS / "perch-contract" / "1.0.0" / "base"
    dst = root / "perch-contract" / "1.0.0" / "base"
    dst.mkdir(parents=True)
    for item in src.iterdir():
        if item.name == MANIFEST_NAME:
            manifest = json.loads(item.read_text())
            manifest["labels"] = None
            (dst / MANIFEST_NAME).write_text(json.dumps(manifest))
        elif item.is_file():
            (dst / item.name).symlink_to(item)
        else:
            shutil.copytree(item, dst / item.name)
    return root


def test_location_filter_is_cached_per_place(planner: Planner, birdnet_artifact: Artifact) -> None:
    options = RequestOptions(lat=42.44, lon=-76.5, week=20)
    first = planner.plan(birdnet_artifact, options)
    second = planner.plan(birdnet_artifact, options)
    assert first.species is not None and first.species.kind == "location"
    assert first.species is second.species  # the range model ran once
    assert first.options.species == first.species.species


def test_species_names_become_a_list_filter(planner: Planner, birdnet_artifact: Artifact) -> None:
    plan = planner.plan(birdnet_artifact, RequestOptions(species=("Geothlypis trichas",)))
    assert plan.species is not None and plan.species.kind == "list"
    assert plan.options.species == ("Geothlypis trichas",)


def test_species_file_and_names_refuse_each_other(
    planner: Planner, birdnet_artifact: Artifact, tmp_path: Path
) -> None:
    listed = tmp_path / "list.txt"
    listed.write_text("Geothlypis trichas_Common Yellowthroat\n")
    plan = planner.plan(birdnet_artifact, RequestOptions(species_file=listed))
    assert plan.species is not None and plan.species.species == ("Geothlypis trichas",)
    with pytest.raises(SpeciesFilterError, match="not both"):
        planner.plan(birdnet_artifact, RequestOptions(species_file=listed, species=("A b",)))
    with pytest.raises(SpeciesFilterError, match="not both"):
        planner.plan(birdnet_artifact, RequestOptions(lat=1.0, lon=2.0, species=("A b",)))
    with pytest.raises(SpeciesFilterError, match="go together"):
        planner.plan(birdnet_artifact, RequestOptions(lat=1.0))


def test_hop_and_overlap_limits_depend_on_the_face(
    planner: Planner, birdnet_artifact: Artifact
) -> None:
    plan = planner.plan(birdnet_artifact, RequestOptions(hop_s=1.5, overlap=0.1))
    assert plan.config.overlap == pytest.approx(0.5)  # hop_s wins
    assert plan.hop_s == pytest.approx(1.5)
    dense = RequestOptions(overlap=0.95)
    assert planner.plan(birdnet_artifact, dense, OFFLINE).config.overlap == pytest.approx(0.95)
    with pytest.raises(RequestError, match=f"overlap over {MAX_OVERLAP:.0%}"):
        planner.plan(birdnet_artifact, dense, SERVICE_LIMITS)
    with pytest.raises(RequestError, match="hop_s 4"):
        planner.plan(birdnet_artifact, RequestOptions(hop_s=4.0))
    limited = planner.plan(birdnet_artifact, RequestOptions(), PlanLimits(max_duration_s=60.0))
    assert limited.options.max_duration_s == 60.0


def test_detections_need_every_score_and_a_classifier(
    planner: Planner, birdnet_artifact: Artifact
) -> None:
    plan = planner.plan(
        birdnet_artifact, RequestOptions(detect=True, min_conf=0.5, species=("Turdus migratorius",))
    )
    assert plan.options.include_logits and plan.detections is not None
    assert plan.detections.min_conf == 0.5
    allowed = plan.detections.allowed
    assert allowed is not None and int(allowed.sum()) == 1
    assert plan.detections.labels[int(allowed.argmax())].startswith("Turdus migratorius_")
    assert plan.detections.codes  # eBird codes for Raven's Species Code column


def test_a_model_without_labels_refuses_lists_and_detections(unlabelled: Path) -> None:
    planner = Planner(make_settings(), ModelRegistry(unlabelled))
    artifact = planner.registry.resolve("perch-contract:1.0.0:base")
    assert planner.plan(artifact, RequestOptions()).species is None
    with pytest.raises(SpeciesFilterError, match="no class labels"):
        planner.plan(artifact, RequestOptions(species=("Turdus migratorius",)))
    with pytest.raises(ModelError, match="no classifier"):
        planner.plan(artifact, RequestOptions(detect=True))


def test_the_worker_refuses_a_species_list_for_a_model_without_labels(
    unlabelled: Path, tmp_path: Path, moto_endpoint: str
) -> None:
    """The worker's own copy of the rule lacked this check: it filtered against an empty
    label list. Planned by the shared planner, it stops at start with the typed error."""
    listed = tmp_path / "list.txt"
    listed.write_text("Turdus migratorius_American Robin\n")
    settings = make_settings()
    settings.models_dir = unlabelled
    engine = EmbeddingEngine(settings)
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    worker = WorkerSettings(species=SpeciesFilterSettings(species_list=listed))
    with pytest.raises(SpeciesFilterError, match="no class labels"):
        S3BatchHandler(worker, engine, s3, "perch-contract:1.0.0:base")
    # The same worker without the list starts.
    handler = S3BatchHandler(WorkerSettings(), engine, s3, "perch-contract:1.0.0:base")
    assert handler.plan.species is None
