"""BirdNET v2.4's species range model: the built ONNX artifact must score what the original
TFLite model scores, and the filter library must refuse what it cannot filter by.

The reference is the original FP16 flatbuffer run by Google's LiteRT interpreter. Over the
grid below the measured maximum difference is 2.9e-6 (float32 rounding of the sine
encoding and the dense layers); a wrong week mask, phase or scaling gives differences of
order 0.1. The species counts are the ones FACTS.md records, measured with LiteRT; FACTS
gives no coordinates, and Ithaca's all-year count depends on them (255/219 at the town
centre, 42.44 N 76.50 W), so the Cornell Lab's site (42.48 N 76.45 W) is used, which
reproduces all four of Ithaca's figures.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from ai_edge_litert.interpreter import Interpreter
from click.testing import CliRunner

from sevensense.artifacts import catalog
from sevensense.artifacts.labels import parse_label_pairs
from sevensense.artifacts.manifest import ModelManifest, OutputRole, TensorSpec, load_manifest
from sevensense.artifacts.registry import Artifact, ModelRegistry
from sevensense.builders import birdnet as bn
from sevensense.builders.build import build_birdnet_range
from sevensense.errors import ManifestError, ModelNotFoundError, SpeciesFilterError
from sevensense.inference.species_range import (
    SpeciesRangeModel,
    allowed_mask,
    load_species_list,
)
from tests.conftest import CACHE, MODELS, make_settings

PARITY_ATOL = 1e-5

ITHACA = (42.48, -76.45)
BERLIN = (52.52, 13.405)
SYDNEY = (-33.8688, 151.2093)

# (lat, lon, week) → kept at 0.03, kept at 0.05 (FACTS.md, measured with LiteRT)
FACTS_COUNTS = [
    ((*ITHACA, 20), 132, 116),
    ((*ITHACA, -1), 254, 218),
    ((*BERLIN, 18), 160, 147),
    ((*SYDNEY, 40), 152, 124),
]

GRID: list[tuple[float, float, int]] = [
    *(point for point, _, _ in FACTS_COUNTS),
    (*ITHACA, 1),
    (*ITHACA, 48),
    (*BERLIN, -1),
    (*SYDNEY, -1),
    (90.0, 180.0, 48),
    (-90.0, -180.0, 1),
    (0.0, 0.0, -1),
    (0.0, 0.0, 24),
    (-1.2921, 36.8219, 10),  # Nairobi
    (-22.9068, -43.1729, 30),  # Rio de Janeiro
    (64.1466, -21.9426, 22),  # Reykjavík
    (35.6762, 139.6503, 16),  # Tokyo
    (19.4326, -99.1332, -1),  # Mexico City
    (-77.85, 166.67, 2),  # McMurdo
    (28.6139, 77.209, 44),  # Delhi
    (-54.8019, -68.303, 6),  # Ushuaia
    (51.5074, -0.1278, 26),  # London
    (21.3069, -157.8583, 35),  # Honolulu
    (-4.4419, 15.2663, 12),  # Kinshasa
    (61.2181, -149.9003, 28),  # Anchorage
]


@pytest.fixture(scope="module")
def range_model(birdnet_range_artifact: Artifact, registry: ModelRegistry) -> SpeciesRangeModel:
    return SpeciesRangeModel(birdnet_range_artifact, registry)


@pytest.fixture(scope="module")
def litert() -> Any:
    interpreter = Interpreter(model_path=str(bn.cached_birdnet_range(CACHE)))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]

    def run(lat: float, lon: float, week: float) -> np.ndarray:
        interpreter.set_tensor(inp, np.array([[lat, lon, week]], dtype=np.float32))
        interpreter.invoke()
        return np.array(interpreter.get_tensor(out)[0])

    return run


# --- parity with the original model ---------------------------------------------------------


def test_onnx_matches_litert_over_a_grid(range_model: SpeciesRangeModel, litert: Any) -> None:
    assert len(GRID) >= 20
    batch = range_model.scores_many(GRID)
    assert batch.shape == (len(GRID), bn.NUM_CLASSES) and batch.dtype == np.float32
    worst = 0.0
    for row, point in zip(batch, GRID, strict=True):
        reference = litert(*point)
        worst = max(worst, float(np.abs(row - reference).max()))
        single = range_model.scores(*point)
        np.testing.assert_allclose(single, row, atol=1e-6, rtol=0)
    assert worst <= PARITY_ATOL, f"max |onnx - litert| = {worst:.3g}"


@pytest.mark.parametrize("week", [0.0, 49.0, 60.0, -5.0, 0.5, 48.5])
def test_week_mask_matches_litert_outside_the_year(
    birdnet_range_artifact: Artifact, litert: Any, week: float
) -> None:
    """The graph itself, below the library's validation: weeks outside (0, 49) are masked
    to "all year" by GREATER/LESS/SELECT_V2, which the converter must reproduce."""
    session = ort.InferenceSession(
        str(birdnet_range_artifact.model_path), providers=["CPUExecutionProvider"]
    )
    x = np.array([[*BERLIN, week]], dtype=np.float32)
    got = session.run(None, {bn.RANGE_INPUT: x})[0][0]
    np.testing.assert_allclose(got, litert(*BERLIN, week), atol=PARITY_ATOL, rtol=0)
    if not 0 < week < 49:
        all_year = session.run(None, {bn.RANGE_INPUT: np.array([[*BERLIN, -1]], np.float32)})
        np.testing.assert_array_equal(got, all_year[0][0])


@pytest.mark.parametrize(("point", "at_003", "at_005"), FACTS_COUNTS)
def test_species_counts_match_facts(
    range_model: SpeciesRangeModel,
    litert: Any,
    point: tuple[float, float, int],
    at_003: int,
    at_005: int,
) -> None:
    assert len(range_model.species_list(*point)) == at_003
    assert len(range_model.species_list(*point, threshold=0.05)) == at_005
    reference = litert(*point)
    assert (int((reference >= 0.03).sum()), int((reference >= 0.05).sum())) == (at_003, at_005)


def test_species_list_is_sorted_with_common_names(range_model: SpeciesRangeModel) -> None:
    kept = range_model.species_list(*ITHACA, 20)
    scores = [s.score for s in kept]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.03
    by_name = {s.scientific: s.common for s in kept}
    assert by_name["Turdus migratorius"] == "American Robin"
    assert "Turdus merula" not in by_name
    berlin = {s.scientific for s in range_model.species_list(*BERLIN, 18)}
    assert "Turdus merula" in berlin and "Turdus migratorius" not in berlin
    scientific, common, score = kept[0]
    assert (scientific, common, score) == tuple(kept[0])
    assert range_model.labels[range_model.scientific_names.index(scientific)] == (
        scientific,
        common,
    )


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lat", "lon", "week"),
    [
        (90.5, 0.0, 20),
        (-91.0, 0.0, 20),
        (math.nan, 0.0, 20),
        (0.0, 180.01, 20),
        (0.0, -181.0, 20),
        (0.0, math.inf, 20),
        (0.0, 0.0, 0),
        (0.0, 0.0, 49),
        (0.0, 0.0, 52),
        (0.0, 0.0, -2),
        (0.0, 0.0, 20.5),
        (0.0, 0.0, True),
    ],
)
def test_bad_locations_are_refused(
    range_model: SpeciesRangeModel, lat: float, lon: float, week: Any
) -> None:
    with pytest.raises(SpeciesFilterError) as info:
        range_model.scores(lat, lon, week)
    assert info.value.code == "invalid_species_filter" and info.value.http_status == 422
    with pytest.raises(SpeciesFilterError):
        range_model.species_list(lat, lon, week)


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_bad_thresholds_are_refused(range_model: SpeciesRangeModel, threshold: float) -> None:
    with pytest.raises(SpeciesFilterError, match="threshold"):
        range_model.species_list(*BERLIN, 18, threshold=threshold)


def test_boundaries_are_accepted(range_model: SpeciesRangeModel) -> None:
    for point in [(90.0, 180.0, 1), (-90.0, -180.0, 48), (0.0, 0.0, -1)]:
        assert range_model.scores(*point).shape == (bn.NUM_CLASSES,)
    assert range_model.species_list(*BERLIN, np.int64(18), threshold=0.999) == []
    with pytest.raises(SpeciesFilterError):
        range_model.scores_many([])


# --- species lists ------------------------------------------------------------------------

LABELS = ["Turdus merula", "Erithacus rubecula", "Parus major", "Engine", "Dog"]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "species.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_species_list_file_is_parsed(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "# my site\n\nTurdus merula_Eurasian Blackbird\n  Parus major  \n"
        "Turdus merula  # again\nErithacus rubecula_European Robin\n",
    )
    names = load_species_list(path, LABELS)
    assert names == ["Turdus merula", "Parus major", "Erithacus rubecula"]
    mask = allowed_mask(LABELS, names)
    assert mask.dtype == np.bool_ and mask.tolist() == [True, True, True, False, False]


def test_species_list_file_matches_birdnet_labels(
    range_model: SpeciesRangeModel, tmp_path: Path
) -> None:
    kept = range_model.species_list(*BERLIN, 18)
    path = _write(tmp_path, "\n".join(f"{s.scientific}_{s.common}" for s in kept) + "\n")
    names = load_species_list(path, range_model.scientific_names)
    mask = allowed_mask(range_model.scientific_names, names)
    scores = range_model.scores(*BERLIN, 18)
    np.testing.assert_array_equal(mask, scores >= 0.03)


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing here\n   # nor here\n"])
def test_empty_species_list_is_an_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(SpeciesFilterError, match="names no species"):
        load_species_list(_write(tmp_path, text), LABELS)


def test_unknown_species_are_listed(tmp_path: Path) -> None:
    path = _write(tmp_path, "Turdus merula\nTurdus merulla_Typo\nDodo\n")
    with pytest.raises(SpeciesFilterError, match="Turdus merulla, Dodo") as info:
        load_species_list(path, LABELS)
    assert info.value.details["unknown"] == ["Turdus merulla", "Dodo"]

    many = "\n".join(f"Genus species{i}" for i in range(25))
    with pytest.raises(SpeciesFilterError) as info:
        load_species_list(_write(tmp_path, many), LABELS)
    assert len(info.value.details["unknown"]) == 20 and info.value.details["unknown_count"] == 25
    assert "species19" in info.value.message and "species20" not in info.value.message
    assert "and 5 more" in info.value.message


def test_unreadable_species_list_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SpeciesFilterError, match="cannot read"):
        load_species_list(tmp_path / "missing.txt", LABELS)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("Turdus m\xe9rula\n".encode("latin-1"))
    with pytest.raises(SpeciesFilterError, match="cannot read"):
        load_species_list(bad, LABELS)


def test_label_pairs() -> None:
    text = "Turdus merula_Eurasian Blackbird\n\nHuman vocal_Human vocal\nEngine\n"
    assert parse_label_pairs(text, "birdnet_txt") == [
        ("Turdus merula", "Eurasian Blackbird"),
        ("Human vocal", "Human vocal"),
        ("Engine", ""),
    ]
    assert parse_label_pairs("a\nb\n", "plain") == [("a", ""), ("b", "")]


# --- the artifact in the registry ---------------------------------------------------------


def test_artifact_verifies_and_is_kept_apart_from_audio_models(
    birdnet_range_artifact: Artifact, registry: ModelRegistry
) -> None:
    art = birdnet_range_artifact
    registry.verify(art, use_cache=False)
    m = load_manifest(art.directory / "manifest.json")
    assert m == art.manifest and m.kind == "range"
    assert str(m.identity) == "birdnet-v2.4-range:2.4.0:base"
    assert m.outputs[OutputRole.OCCURRENCE].shape == ["batch", bn.NUM_CLASSES]
    assert m.labels is not None and m.labels.count == bn.NUM_CLASSES
    assert (art.directory / "labels.txt").read_bytes() == (
        bn.cached_birdnet_files(CACHE).labels_path.read_bytes()
    )

    audio = {a.manifest.name for a in registry.artifacts(kind="audio")}
    assert catalog.BIRDNET_NAME in audio and catalog.BIRDNET_RANGE_NAME not in audio
    assert catalog.BIRDNET_RANGE_NAME in {a.manifest.name for a in registry.artifacts()}
    with pytest.raises(ModelNotFoundError, match="is a range model"):
        registry.resolve(catalog.BIRDNET_RANGE_NAME)
    assert registry.resolve(catalog.BIRDNET_RANGE_NAME, kind="range").key == art.key
    assert SpeciesRangeModel.from_registry(registry).artifact.key == art.key

    with pytest.raises(ManifestError, match="no embedding"):
        _ = m.embedding_dim
    with pytest.raises(ManifestError, match="no window"):
        _ = m.window_seconds
    assert m.n_classes is None


def test_serving_never_sees_the_range_model(birdnet_range_artifact: Artifact) -> None:
    from sevensense.serving.rollout.resolver import ModelResolver

    class NoRollouts:
        def load(self) -> dict[str, Any]:
            return {}

    resolver = ModelResolver(make_settings(), NoRollouts())  # type: ignore[arg-type]
    names = {a.manifest.name for a in resolver.artifacts(max_age_s=0.0)}
    assert catalog.BIRDNET_RANGE_NAME not in names and catalog.BIRDNET_NAME in names
    with pytest.raises(ModelNotFoundError):
        resolver.resolve(catalog.BIRDNET_RANGE_NAME, "key")
    assert all(catalog.BIRDNET_RANGE_NAME not in ref for ref in resolver.served_refs())


def test_models_list_shows_the_range_model_only_when_asked(
    birdnet_range_artifact: Artifact,
) -> None:
    from sevensense.cli import main

    runner = CliRunner()
    base = ["--models-dir", str(MODELS), "models", "list", "--json"]
    audio = json.loads(runner.invoke(main, base, catch_exceptions=False).output)
    assert catalog.BIRDNET_RANGE_NAME not in {row["model"].split(":")[0] for row in audio}
    ranged = json.loads(runner.invoke(main, [*base, "--kind", "range"]).output)
    assert [row["model"] for row in ranged] == ["birdnet-v2.4-range:2.4.0:base"]
    assert ranged[0]["embedding_dim"] is None
    text = runner.invoke(main, [*base[:-1], "--kind", "range"], catch_exceptions=False)
    assert text.exit_code == 0 and "birdnet-v2.4-range" in text.output


def test_engine_refuses_the_range_model(engine: Any) -> None:
    with pytest.raises(ModelNotFoundError, match="is a range model"):
        engine.model(catalog.BIRDNET_RANGE_NAME)


def test_rebuild_is_a_no_op(birdnet_range_artifact: Artifact, registry: ModelRegistry) -> None:
    model = birdnet_range_artifact.model_path
    before = model.stat().st_mtime_ns
    again = build_birdnet_range(registry, CACHE)
    assert again.key == birdnet_range_artifact.key and model.stat().st_mtime_ns == before


def test_manifest_kinds_are_checked() -> None:
    range_manifest = ModelManifest(
        kind="range",
        name="r",
        version="1",
        size_bytes=1,
        input=TensorSpec(name="location", shape=["batch", 3]),
        outputs={OutputRole.OCCURRENCE: TensorSpec(name="o", shape=["batch", 2])},
        license="x",
    )
    fields = range_manifest.model_dump()
    with pytest.raises(ValueError, match="exactly one output"):
        ModelManifest.model_validate(
            fields | {"outputs": {"embedding": {"name": "e", "shape": ["batch", 2]}}}
        )
    with pytest.raises(ValueError, match="no sample_rate"):
        ModelManifest.model_validate(fields | {"sample_rate": 48_000})
    with pytest.raises(ValueError, match="positive sample_rate"):
        ModelManifest.model_validate(
            fields
            | {"kind": "audio", "outputs": {"embedding": {"name": "e", "shape": ["batch", 2]}}}
        )
    with pytest.raises(ValueError, match="'embedding' output"):
        ModelManifest.model_validate(fields | {"kind": "audio", "sample_rate": 1})
    audio = ModelManifest.model_validate(
        {k: v for k, v in fields.items() if k != "kind"}
        | {
            "sample_rate": 1,
            "window_samples": 1,
            "outputs": {"embedding": {"name": "e", "shape": ["batch", 2]}},
        }
    )
    assert audio.kind == "audio" and audio.embedding_dim == 2
