"""The Perch-sized benchmark model keeps Perch 2.0's contract and size, and the curve is sane.

The batching recommendation is only as good as the model it times: if the graph drifted
from the contract or shrank, the figures would stop describing production.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from bench import perch_sized as ps
from bench.batch_curve import (
    LATENCY_STEP_MS,
    Point,
    ProviderUnavailableError,
    measure_curve,
    open_session,
    recommend,
    synthetic_batch,
)
from sevensense.builders import perch_contract as pc
from sevensense.settings import repo_root

SHAPES = {
    "embedding": [1536],
    "spatial_embedding": [16, 4, 1536],
    "spectrogram": [500, 128],
    "label": [14795],
}


@pytest.fixture(scope="module")
def built() -> tuple[Path, ps.ModelStats]:
    return ps.ensure_perch_sized_model()


@pytest.fixture(scope="module")
def session(built: tuple[Path, ps.ModelStats]) -> Iterator[ort.InferenceSession]:
    sess, info = open_session(built[0], "cpu", threads=2)
    assert info["provider"] == "CPUExecutionProvider"
    yield sess


def _run(session: ort.InferenceSession, batch: np.ndarray) -> dict[str, np.ndarray]:
    return dict(zip(ps.OUTPUTS, session.run(list(ps.OUTPUTS), {"inputs": batch}), strict=True))


def test_b3_stage_widths_and_depths() -> None:
    stages = ps.b3_stages()
    assert [s.repeats for s in stages] == [2, 3, 3, 5, 5, 6, 2]
    assert [s.channels for s in stages] == [24, 32, 48, 96, 136, 232, 384]
    assert [s.kernel for s in stages] == [3, 3, 5, 3, 5, 5, 3]
    assert [s.expansion for s in stages] == [1, 6, 6, 6, 6, 6, 6]
    assert ps.round_filters(ps.STEM_CHANNELS_B0) == 40
    assert ps.round_filters(ps.HEAD_CHANNELS_B0) == 1536


def test_size_and_cost_are_perch_like(built: tuple[Path, ps.ModelStats]) -> None:
    path, stats = built
    assert 10.0e6 <= stats.params_backbone <= 13.0e6
    assert stats.params_label_head == 1536 * 14795 + 14795
    assert stats.params_total == stats.params_backbone + stats.params_label_head
    assert 1.0e9 <= stats.macs_backbone <= 1.5e9
    assert 1.0e9 <= stats.macs_total <= 2.0e9
    assert stats.feature_map == [1536, 16, 4]
    assert path.stat().st_size == stats.size_bytes
    assert path.resolve().is_relative_to(repo_root() / ".cache")


def test_declared_io_has_the_perch_contract_with_dynamic_batch(
    session: ort.InferenceSession,
) -> None:
    [inp] = session.get_inputs()
    assert (inp.name, inp.type, inp.shape) == ("inputs", "tensor(float)", ["batch", 160000])
    declared = {o.name: (o.type, o.shape) for o in session.get_outputs()}
    assert declared == {n: ("tensor(float)", ["batch", *s]) for n, s in SHAPES.items()}


@pytest.mark.parametrize("batch", [1, 3])
def test_outputs_have_the_contract_shapes_and_sane_values(
    session: ort.InferenceSession, batch: int
) -> None:
    x = synthetic_batch(batch, pc.WINDOW_SAMPLES, seed=7)
    out = _run(session, x)
    for name, tail in SHAPES.items():
        assert out[name].shape == (batch, *tail), name
        assert out[name].dtype == np.float32, name
        assert np.isfinite(out[name]).all(), name
    # folded-BatchNorm scaling keeps the random network at a usable scale
    assert 1e-3 < float(np.abs(out["embedding"]).mean()) < 1e3
    assert float(out["embedding"].std()) > 1e-3


def test_spectrogram_is_the_perch_contract_frontend(session: ort.InferenceSession) -> None:
    x = synthetic_batch(2, pc.WINDOW_SAMPLES, seed=3)
    got = _run(session, x)["spectrogram"]
    assert np.abs(got - pc.reference_log_mel(x)).max() <= 2e-3


def test_rows_do_not_depend_on_the_batch_they_ride_in(session: ort.InferenceSession) -> None:
    x = synthetic_batch(3, pc.WINDOW_SAMPLES, seed=11)
    single = _run(session, x[1:2])
    batched = _run(session, x)
    for name in ("embedding", "label"):
        scale = float(np.abs(single[name]).max())
        np.testing.assert_allclose(batched[name][1], single[name][0], atol=1e-4 * scale, rtol=0)


def test_curve_returns_sane_numbers_on_a_tiny_budget(session: ort.InferenceSession) -> None:
    points = measure_curve(
        session, "inputs", ["embedding", "label"], pc.WINDOW_SAMPLES, [2, 1], 0.2, min_runs=2
    )
    assert [p.batch for p in points] == [1, 2]
    for p in points:
        assert p.runs >= 2
        assert 0 < p.median_ms <= p.p90_ms < 60_000
        assert p.windows_per_s == pytest.approx(p.batch * 1e3 / p.median_ms)
        assert p.ms_per_window == pytest.approx(p.median_ms / p.batch)
    rec = recommend(points)
    assert rec.max_batch_size in (1, 2)
    chosen = next(p for p in points if p.batch == rec.max_batch_size)
    assert rec.max_latency_ms >= 2 * chosen.p90_ms
    assert rec.max_latency_ms % LATENCY_STEP_MS == 0


def _point(batch: int, median_ms: float, p90_ms: float) -> Point:
    return Point(batch, 10, median_ms, p90_ms, batch * 1e3 / median_ms, median_ms / batch)


def test_recommendation_takes_the_smallest_batch_near_the_best_throughput() -> None:
    points = [_point(1, 40, 50), _point(4, 100, 130), _point(8, 190, 240), _point(16, 390, 500)]
    rec = recommend(points)
    assert (rec.best_batch, rec.max_batch_size) == (8, 4)
    assert rec.max_latency_ms == 350  # 2 x 130 x 1.25 = 325, up to the next 50


def test_cuda_request_fails_clearly_without_a_gpu(built: tuple[Path, ps.ModelStats]) -> None:
    try:
        sess, info = open_session(built[0], "cuda")
    except ProviderUnavailableError as exc:
        assert "CUDAExecutionProvider" in str(exc)
    else:
        assert info["provider"] == "CUDAExecutionProvider"
        del sess
