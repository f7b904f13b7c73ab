"""The ``int8-static`` and ``fp16`` variants: measured on held-out real audio, refused when
they fall short, loadable by name:version:variant and run by the engine on real audio.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from sevensense.artifacts.registry import Artifact, ModelRegistry
from sevensense.builders import variants
from sevensense.builders.build import build_perch_contract, build_variant
from sevensense.builders.quantize import front_end_node_set
from sevensense.cli import main
from sevensense.errors import ModelError, ModelNotFoundError
from sevensense.inference.engine import EmbeddingEngine, EmbedOptions
from tests.conftest import audio
from tests.test_cli import run

QUALITY_KEYS = {
    "cosine_median",
    "cosine_min",
    "n_windows",
    "top1_agreement",
    "top5_agreement",
    "speed_ratio_cpu_1t",
    "size_ratio",
}
HELD_OUT = "xc563936_soundscape_72s_48k.mp3"


@pytest.fixture(scope="module")
def built(
    registry: ModelRegistry, birdnet_artifact: Artifact, perch_artifact: Artifact
) -> dict[str, Artifact]:
    """The variants as set-up leaves them in the repository's registry (built if missing)."""
    return {
        "perch-contract:int8-static": build_variant(registry, "perch-contract", "static"),
        "perch-contract:fp16": build_variant(registry, "perch-contract", "fp16"),
        "birdnet-v2.4:fp16": build_variant(registry, "birdnet-v2.4", "fp16"),
    }


@pytest.fixture
def perch_registry(tmp_path: Path) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "models")
    build_perch_contract(registry)
    return registry


@pytest.mark.parametrize(
    "key", ["perch-contract:int8-static", "perch-contract:fp16", "birdnet-v2.4:fp16"]
)
def test_variant_manifest_carries_its_quality_on_held_out_audio(
    built: dict[str, Artifact], registry: ModelRegistry, key: str
) -> None:
    name, variant = key.split(":")
    art, base = built[key], registry.resolve(name)
    m = art.manifest
    method = "static" if variant == "int8-static" else "fp16"
    assert m.variant == variant and art.present
    assert m.quality.keys() >= QUALITY_KEYS
    assert m.quality["n_windows"] >= 20
    assert m.quality["cosine_median"] >= variants.QUALITY_BARS[method].cosine_median
    assert m.quality["cosine_min"] >= variants.QUALITY_BARS[method].cosine_min
    assert f"sha256={base.manifest.sha256}" in m.source and variants.RECIPES[method] in m.source
    model = onnx.load(str(base.model_path))
    assert m.float_nodes == front_end_node_set(model) and m.float_nodes
    assert (m.input, m.outputs, m.labels) == (
        base.manifest.input,
        base.manifest.outputs,
        base.manifest.labels,
    )


def test_over_quantized_variant_fails_its_bar_and_is_not_registered(
    perch_registry: ModelRegistry,
) -> None:
    """Also: a variant left by another base or recipe does not outlive the refused rebuild."""
    base = perch_registry.resolve("perch-contract")
    stale = base.directory.parent / "int8-static"
    shutil.copytree(base.directory, stale)
    old = base.manifest.model_copy(update={"variant": "int8-static", "source": "older recipe"})
    old.dump(stale / "manifest.json")
    assert perch_registry.resolve("perch-contract:1.0.0:int8-static").directory == stale
    with pytest.raises(ModelError, match="fails its quality bar") as err:
        build_variant(perch_registry, "perch-contract", "static", keep_front_end=False)
    assert "cosine_median" in err.value.message and "not registered" in err.value.message
    with pytest.raises(ModelNotFoundError):
        perch_registry.resolve("perch-contract:1.0.0:int8-static")
    assert not (perch_registry.root / "perch-contract" / "1.0.0" / "int8-static").exists()


def test_bar_failures_name_each_figure_and_skip_meaningless_logits() -> None:
    bar = variants.QUALITY_BARS["static"]
    quality = {"cosine_median": 0.98, "cosine_min": 0.97, "top1_agreement": 1.0}
    quality["top5_agreement"] = 0.5
    assert bar.failures(quality, logits_mean_something=True) == [
        "cosine_median 0.9800 < 0.99",
        "top5_agreement 0.5000 < 0.95",
    ]
    assert bar.failures(quality, logits_mean_something=False) == ["cosine_median 0.9800 < 0.99"]


def test_cli_refuses_calibrating_on_the_held_out_recordings(perch_registry: ModelRegistry) -> None:
    args = ["--models-dir", str(perch_registry.root), "models", "quantize", "perch-contract"]
    same = str(audio("perch_clap_21s_16k.wav"))
    result = CliRunner().invoke(
        main, [*args, "--method", "static", "--calibration", same, "--holdout", same]
    )
    assert result.exit_code == 2, result.output
    assert "share recordings" in result.output
    assert not list(perch_registry.root.glob("*/*/int8-static"))


def test_fp16_keeps_float32_io_and_is_listed(built: dict[str, Artifact]) -> None:
    for key in ("perch-contract:fp16", "birdnet-v2.4:fp16"):
        graph = onnx.load(str(built[key].model_path), load_external_data=False).graph
        types = {t.type.tensor_type.elem_type for t in [*graph.input, *graph.output]}
        assert types == {onnx.TensorProto.FLOAT}
        assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer), (
            "weights are fp16"
        )
    listed = run("models", "list", check=True).stdout
    for ref in ("birdnet-v2.4:2.4.0:fp16", "perch-contract:1.0.0:fp16"):
        assert ref in listed
    assert "perch-contract:1.0.0:int8-static" in listed


@pytest.mark.parametrize("variant", ["int8-static", "fp16"])
def test_variants_run_through_the_engine_on_real_audio(
    perch_engine: EmbeddingEngine, built: dict[str, Artifact], variant: str
) -> None:
    base = perch_engine.model("perch-contract:1.0.0:base")
    other = perch_engine.model(f"perch-contract:1.0.0:{variant}")
    assert other.identity.variant == variant and other.labels == base.labels
    options = EmbedOptions(top_k=1)
    rb = list(perch_engine.embed_file(audio(HELD_OUT), model=base, options=options))
    ro = list(perch_engine.embed_file(audio(HELD_OUT), model=other, options=options))
    assert len(rb) == len(ro) >= 20
    cos = np.array([np.dot(b.embedding, x.embedding) for b, x in zip(rb, ro, strict=True)])
    assert all(x.quality.is_valid for x in ro)
    assert np.median(cos) >= 0.99 and cos.min() >= 0.95


def test_dynamic_variant_also_records_held_out_real_audio(registry: ModelRegistry) -> None:
    from sevensense.builders.build import build_quantized

    q = build_quantized(registry, "birdnet-v2.4").manifest.quality
    keys = {"holdout_cosine_median", "holdout_cosine_min", "holdout_top1_agreement"}
    assert q.keys() >= keys | {"holdout_top5_agreement", "holdout_n_windows"}
    assert "speed_ratio_cpu_1t" in q and "holdout_size_ratio" not in q
    assert q["holdout_n_windows"] >= 20 and q["holdout_cosine_median"] >= 0.99
