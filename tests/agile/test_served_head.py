"""The classifier head inside a model service's batch: the real ``ModelHost`` (the CPU
model service without BentoML) runs BirdNET v2.4 on real windows, then the head named by
each item, in the same ``infer`` call; items of one batch may name different heads or
none. The scores equal the head applied to what the gateway would make of the embedding,
and a host refuses a head of another space, an unknown one or another file, typed, while
the embedding stands."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from sevensense.agile.served_head import HeadRef, head_refusal
from sevensense.agile.store import ClassifierStore
from sevensense.artifacts.registry import Artifact
from sevensense.audio.pipeline import prepare_windows
from sevensense.embeddings.transform import IDENTITY
from sevensense.inference.engine import EmbedOptions, preprocess_config
from sevensense.inference.postprocess import l2_normalize
from sevensense.serving.model_service.host import ModelHost
from sevensense.serving.model_service.rpc import WindowItem, from_bytes, to_bytes
from sevensense.settings import Settings, load_settings
from tests.agile.heads import KEY, save_head
from tests.conftest import audio
from tests.serving.conftest import link_artifact


@pytest.fixture(scope="module")
def host(
    tmp_path_factory: pytest.TempPathFactory, birdnet_artifact: Artifact
) -> tuple[ModelHost, Settings, Artifact]:
    root = tmp_path_factory.mktemp("head-models")
    link_artifact(birdnet_artifact, root)
    settings = load_settings(None).model_copy(update={"models_dir": root})
    model_host = ModelHost("cpu", settings)
    model_host.start(["birdnet-v2.4:2.4.0"])
    assert model_host.ready, model_host.reason
    return model_host, settings, birdnet_artifact


def items(settings: Settings, artifact: Artifact, heads: list[HeadRef | None]) -> list[WindowItem]:
    config = preprocess_config(settings, artifact.manifest, EmbedOptions(energy_threshold=0.0))
    windows = itertools.islice(
        prepare_windows(audio("soundscape_birdnet_120s_48k.flac"), config), len(heads)
    )
    return [
        WindowItem(model="birdnet-v2.4:2.4.0", samples=to_bytes(w.samples), head=h)
        for w, h in zip(windows, heads, strict=True)
    ]


def test_heads_run_in_the_model_services_batch(
    host: tuple[ModelHost, Settings, Artifact],
) -> None:
    model_host, settings, artifact = host
    store = ClassifierStore(Path(settings.models_dir))
    a = save_head(store, "calls", ("x", "y"), 1)
    b = save_head(store, "other", ("z",), 2)
    ref_a, ref_b = HeadRef.of(a, IDENTITY), HeadRef.of(b, IDENTITY)
    batch = items(settings, artifact, [ref_a, None, ref_b, ref_a, None, ref_b])
    outputs = model_host.infer(batch)
    assert all(o.error is None and o.head_error is None for o in outputs)
    raw = np.stack([from_bytes(o.embedding) for o in outputs])
    normed, _ = l2_normalize(raw)
    for o, item, vector in zip(outputs, batch, normed, strict=True):
        if item.head is None:
            assert o.custom is None
            continue
        classifier = a if item.head == ref_a else b
        assert o.custom is not None
        assert np.allclose(from_bytes(o.custom), classifier.head(vector[None])[0], atol=1e-5)
        assert o.head_ms > 0


def test_a_host_refuses_a_head_typed_and_keeps_the_embedding(
    host: tuple[ModelHost, Settings, Artifact],
) -> None:
    model_host, settings, artifact = host
    store = ClassifierStore(Path(settings.models_dir))
    good = HeadRef.of(save_head(store, "refused", ("x", "y"), 3), IDENTITY)
    other_space = good.model_copy(update={"space": KEY.model_copy(update={"model_version": "9"})})
    unknown = good.model_copy(update={"name": "nope"})
    other_file = good.model_copy(update={"onnx_sha256": "0" * 64})
    reduced = good.model_copy(update={"project": "poincare"})
    outputs = model_host.infer(
        items(settings, artifact, [other_space, unknown, other_file, reduced, good])
    )
    codes = [(o.head_error or {}).get("code") for o in outputs]
    assert codes == [
        "classifier_space_mismatch",
        "classifier_not_found",
        "checksum_mismatch",
        "classifier_space_mismatch",
        None,
    ]
    assert all(len(from_bytes(o.embedding)) == 1024 and o.error is None for o in outputs)
    refusal = head_refusal(outputs[3].head_error or {})
    assert refusal.http_status == 409
    assert refusal.details["classifier_space"] == str(KEY)
    assert "poincare" in refusal.details["space"]
    assert head_refusal(outputs[1].head_error or {}).http_status == 404
