"""OpenVINO as the CPU runtime: the same BirdNET ONNX file, the same outputs as ONNX Runtime
on real windows (cosine >= 0.9999, top-1 equal), through the whole engine."""

from __future__ import annotations

import numpy as np
import pytest

from sevensense.artifacts.manifest import OutputRole
from sevensense.errors import InferenceError
from sevensense.inference.engine import EmbeddingEngine
from sevensense.inference.openvino_runtime import PROVIDER, OpenVinoSession
from sevensense.inference.sessions import SessionManager
from tests.conftest import audio, make_settings

RECORDINGS = ("soundscape_birdnet_120s_48k.flac", "labelled/common_yellowthroat.mp3")


def _engine(runtime: str) -> EmbeddingEngine:
    return EmbeddingEngine(make_settings(inference__runtime=runtime))


def test_openvino_matches_onnxruntime_on_real_windows(birdnet_artifact) -> None:  # type: ignore[no-untyped-def]
    ort_engine, ov_engine = _engine("onnxruntime"), _engine("openvino")
    model = ov_engine.model()
    assert isinstance(model.session, OpenVinoSession) and model.provider == PROVIDER
    for name in RECORDINGS:
        base = list(ort_engine.embed_file(audio(name), options=None))
        ours = list(ov_engine.embed_file(audio(name), options=None))
        assert len(base) == len(ours) > 0
        a = np.stack([r.embedding for r in base])
        b = np.stack([r.embedding for r in ours])
        cos = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cos.min() >= 0.9999, cos.min()
        assert [r.top_k[0][0] for r in ours] == [r.top_k[0][0] for r in base]
        assert all(r.meta.provider == PROVIDER for r in ours)


def test_openvino_sessions_are_cached_and_report_their_runtime(birdnet_artifact) -> None:  # type: ignore[no-untyped-def]
    engine = _engine("openvino")
    assert isinstance(engine.sessions, SessionManager)
    first, second = engine.model(), engine.model()
    assert first is second
    assert first.providers == [PROVIDER]


def test_a_batch_with_the_wrong_width_is_a_typed_error(birdnet_artifact) -> None:  # type: ignore[no-untyped-def]
    engine = _engine("openvino")
    model = engine.model()
    with pytest.raises(InferenceError):
        engine.run_batch(model, np.zeros((2, 1000), dtype=np.float32), [OutputRole.EMBEDDING])
