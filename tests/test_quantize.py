"""The int8 ``quantized`` variants: built at set-up, measured, loadable, rebuilt when stale.

Thresholds come from measurement (builders/quantize.py): BirdNET's embedding is untouched
by the recipe (cosine 1.0 on real audio, top-1 agreement 0.99 on 107 real windows) and the
Perch-contract model, whose MatMul backbone is quantized, keeps cosine 0.9998 on average
and 0.9995 at worst; 0.999 mean and 0.995 minimum leave room for other CPUs' kernels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from sevensense.artifacts.registry import Artifact, ModelRegistry
from sevensense.builders.build import build_all, build_perch_contract, build_quantized
from sevensense.builders.quantize import front_end_nodes, synthetic_windows
from sevensense.cli import main
from sevensense.inference.engine import EmbeddingEngine, EmbedOptions
from sevensense.settings import load_settings
from tests.conftest import CACHE, MODELS, audio
from tests.test_cli import run

MIN_MEAN_COSINE = 0.999
MIN_COSINE = 0.995
REAL_AUDIO = "soundscape_birdnet_120s_48k.flac"
QUALITY_KEYS = {"cosine_mean", "cosine_min", "cosine_p05", "n_windows", "size_ratio"}


@pytest.fixture(scope="module")
def quantized(
    registry: ModelRegistry, birdnet_artifact: Artifact, perch_artifact: Artifact
) -> dict[str, tuple[Artifact, Artifact]]:
    """(base, quantized) by model name, in the repository's registry as set-up leaves it."""
    return {
        a.manifest.name: (a, build_quantized(registry, str(a.manifest.identity)))
        for a in (birdnet_artifact, perch_artifact)
    }


@pytest.fixture
def perch_registry(tmp_path: Path) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "models")
    build_perch_contract(registry)
    return registry


@pytest.mark.parametrize("name", ["birdnet-v2.4", "perch-contract"])
def test_quantized_artifact_records_its_quality(
    quantized: dict[str, tuple[Artifact, Artifact]], name: str
) -> None:
    base, q = quantized[name]
    m = q.manifest
    assert m.variant == "quantized" and q.present
    assert m.quality.keys() >= QUALITY_KEYS
    assert ("top1_agreement" in m.quality) == (base.manifest.n_classes is not None)
    assert m.quality["n_windows"] == 64
    assert m.quality["cosine_mean"] >= MIN_MEAN_COSINE and m.quality["cosine_min"] >= MIN_COSINE
    sizes = q.model_path.stat().st_size, base.model_path.stat().st_size
    assert sizes[0] < sizes[1]
    assert m.quality["size_ratio"] == pytest.approx(sizes[0] / sizes[1], abs=1e-6)
    assert f"sha256={base.manifest.sha256}" in m.source
    assert f"onnxruntime {ort.__version__}" in m.source and "synthetic" in m.description
    assert (m.input, m.outputs, m.labels) == (
        base.manifest.input,
        base.manifest.outputs,
        base.manifest.labels,
    )
    assert m.test_artifact == base.manifest.test_artifact


@pytest.mark.parametrize("name", ["birdnet-v2.4", "perch-contract"])
def test_real_audio_cosine_through_the_engine(
    engine: EmbeddingEngine, quantized: dict[str, tuple[Artifact, Artifact]], name: str
) -> None:
    base, q = (engine.model(str(a.manifest.identity)) for a in quantized[name])
    assert q.identity.variant == "quantized" and q.labels == base.labels
    options = EmbedOptions(top_k=1)
    rb = list(engine.embed_file(audio(REAL_AUDIO), model=base, options=options))
    rq = list(engine.embed_file(audio(REAL_AUDIO), model=q, options=options))
    assert len(rb) == len(rq) >= 40
    cos = np.array([np.dot(b.embedding, x.embedding) for b, x in zip(rb, rq, strict=True)])
    assert all(x.quality.is_valid for x in rq)
    assert cos.mean() >= MIN_MEAN_COSINE and cos.min() >= MIN_COSINE
    assert cos.mean() == pytest.approx(q.manifest.quality["cosine_mean"], abs=1e-3)
    if name == "birdnet-v2.4":
        agree = np.mean([b.top_k[0][0] == x.top_k[0][0] for b, x in zip(rb, rq, strict=True)])
        assert agree >= 0.95


def test_field_profile_and_explicit_ref_run_the_quantized_variant(
    quantized: dict[str, tuple[Artifact, Artifact]], registry: ModelRegistry, tmp_path: Path
) -> None:
    ref = "birdnet-v2.4:2.4.0:quantized"
    assert registry.resolve(ref).key == quantized["birdnet-v2.4"][1].key
    field = EmbeddingEngine(load_settings("field", models_dir=MODELS))
    assert str(field.model().identity) == ref
    out = tmp_path / "field.parquet"
    proc = run(
        "--profile",
        "field",
        "embed",
        str(audio("birdnet_sample_3s_48k.wav")),
        "--out",
        str(out),
        "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    assert f"[{ref} on CPUExecutionProvider]" in proc.stdout
    listed = run("models", "list", check=True).stdout
    assert ref in listed and "perch-contract:1.0.0:quantized" in listed


def test_build_all_includes_the_quantized_variants_and_skips_them_when_current(
    quantized: dict[str, tuple[Artifact, Artifact]], registry: ModelRegistry
) -> None:
    first = {str(a.manifest.identity): a for a in build_all(registry, CACHE)}
    assert {"birdnet-v2.4:2.4.0:quantized", "perch-contract:1.0.0:quantized"} <= first.keys()
    stamps = {k: (a.manifest.sha256, a.model_path.stat().st_mtime_ns) for k, a in first.items()}
    again = {str(a.manifest.identity): a for a in build_all(registry, CACHE)}
    assert {
        k: (a.manifest.sha256, a.model_path.stat().st_mtime_ns) for k, a in again.items()
    } == stamps


def test_a_rebuilt_base_makes_the_quantized_variant_stale(perch_registry: ModelRegistry) -> None:
    first = build_quantized(perch_registry, "perch-contract")
    mtime = first.model_path.stat().st_mtime_ns
    same = build_quantized(perch_registry, "perch-contract:1.0.0")
    assert (same.manifest, same.model_path.stat().st_mtime_ns) == (first.manifest, mtime)

    rebuilt = build_perch_contract(perch_registry, seed=11, force=True)
    assert rebuilt.manifest.sha256 not in first.manifest.source
    fresh = build_quantized(perch_registry, "perch-contract")
    assert f"sha256={rebuilt.manifest.sha256}" in fresh.manifest.source
    assert fresh.manifest.sha256 != first.manifest.sha256
    assert fresh.manifest.quality["cosine_mean"] >= MIN_MEAN_COSINE


def test_a_corrupt_quantized_file_is_rebuilt(perch_registry: ModelRegistry) -> None:
    first = build_quantized(perch_registry, "perch-contract")
    data = bytearray(first.model_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.model_path.write_bytes(bytes(data))
    again = build_quantized(perch_registry, "perch-contract")
    assert again.manifest.sha256 == first.manifest.sha256
    perch_registry.verify(again, use_cache=False)


def test_cli_quantize_prints_the_figures(perch_registry: ModelRegistry) -> None:
    args = ["--models-dir", str(perch_registry.root), "models", "quantize"]
    result = CliRunner().invoke(main, [*args, "perch-contract"])
    assert result.exit_code == 0, result.output
    assert "ok perch-contract:1.0.0:quantized" in result.output
    for key in ("cosine_mean", "cosine_min", "top1_agreement", "size_ratio"):
        assert key in result.output
    built = perch_registry.resolve("perch-contract:1.0.0:quantized")
    mtime = built.model_path.stat().st_mtime_ns

    forced = CliRunner().invoke(main, [*args, "perch-contract", "--force"])
    assert forced.exit_code == 0, forced.output
    assert built.model_path.stat().st_mtime_ns != mtime

    refused = CliRunner().invoke(main, [*args, "perch-contract:1.0.0:quantized"])
    assert refused.exit_code == 2 and "already quantized" in refused.output


def test_front_end_stays_float_and_the_measurement_set_is_reproducible(
    quantized: dict[str, tuple[Artifact, Artifact]],
) -> None:
    import onnx

    base, q = quantized["perch-contract"]
    assert front_end_nodes(onnx.load(str(base.model_path))) == ["stft", "mel"]
    ops = {n.name: n.op_type for n in onnx.load(str(q.model_path)).graph.node}
    assert ops["stft"] == ops["mel"] == "MatMul"
    assert "DynamicQuantizeMatMul" in ops.values() or "MatMulInteger" in ops.values()
    a, b = synthetic_windows(32_000, 160_000, count=8), synthetic_windows(32_000, 160_000, count=8)
    assert np.array_equal(a, b) and np.all(np.abs(a).max(axis=1) > 0)
    assert not np.array_equal(a, synthetic_windows(32_000, 160_000, count=8, seed=1))
