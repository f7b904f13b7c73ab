"""The embedding-quality monitor (ADR-007 §6.1) against a numpy reference, and the
``anomalous_norm`` flag on real model outputs through the JSON answer, Parquet and the CLI."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from sevensense.artifacts.manifest import ModelIdentity, OutputRole
from sevensense.audio.pipeline import StreamStats, prepare_windows
from sevensense.cli import main
from sevensense.embeddings.quality import QualityMonitor, QualityMonitors
from sevensense.inference.engine import EmbeddingEngine, EmbedOptions, InferenceMeta, to_results
from sevensense.outputs.response import EmbedOutcome, Timing, to_response
from sevensense.outputs.writers import ParquetWriter
from sevensense.settings import QualitySettings
from tests.conftest import audio

ID = ModelIdentity(name="m", version="1", variant="base")


def reference(norms: np.ndarray, units: np.ndarray, window: int, recent: int, thr: float) -> dict:
    """The ADR's rules written out plainly: all pairs with the last ``recent`` embeddings."""
    finite = np.isfinite(norms)
    kept_norms, kept_units = norms[finite], units[finite]
    flags, distances = [], []
    for i, n in enumerate(kept_norms):
        history = kept_norms[max(0, i - window) : i]
        flags.append(len(history) >= 100 and abs(n - history.mean()) > thr * history.std())
        for j in range(max(0, i - recent), i):
            distances.append(1.0 - float(kept_units[j] @ kept_units[i]))
    return {
        "norms": kept_norms[-window:],
        "distances": np.array(distances[-window:]),
        "flags": np.array(flags),
    }


def test_report_matches_numpy_reference() -> None:
    rng = np.random.default_rng(7)
    n, dim, window, recent = 700, 32, 250, 6
    raw = rng.normal(size=(n, dim)) * rng.uniform(0.5, 1.5, size=(n, 1)) * 10
    raw[[300, 450, 620]] *= 8.0  # outliers
    norms = np.linalg.norm(raw, axis=1)
    norms[500] = np.nan  # a NaN window: counted, never in the history
    units = (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float32)
    settings = QualitySettings(
        window=window, pair_sample=recent, recent=recent, anomaly_threshold=3.0
    )
    monitor = QualityMonitor(ID, settings)
    seen_flags = [monitor.observe(float(v), u) for v, u in zip(norms, units, strict=True)]
    ref = reference(norms, units, window, recent, 3.0)
    report = monitor.report()

    assert [f for f, ok in zip(seen_flags, np.isfinite(norms), strict=True) if ok] == list(
        ref["flags"]
    )
    assert ref["flags"][[300, 450]].all() and ref["flags"].sum() >= 3
    assert report.seen == n and report.non_finite == 1
    for got, values in (
        (report.raw_norm, ref["norms"]),
        (report.cosine_distance, ref["distances"]),
    ):
        assert got.count == values.size == window
        assert got.mean == pytest.approx(values.mean(), rel=1e-6)
        assert got.std == pytest.approx(values.std(), rel=1e-5)
        pct = np.percentile(values, [5, 25, 50, 75, 95])
        assert got.percentiles is not None
        assert list(got.percentiles.model_dump().values()) == pytest.approx(pct, rel=1e-5)
    last = ref["flags"][-window:]
    assert report.anomalies == int(last.sum())
    assert report.anomaly_rate == pytest.approx(last.mean())
    assert report.anomalies_total == int(ref["flags"].sum())


def test_sampled_pairs_are_pairs_of_recent_embeddings() -> None:
    rng = np.random.default_rng(3)
    units = rng.normal(size=(40, 8)).astype(np.float32)
    units /= np.linalg.norm(units, axis=1, keepdims=True)
    monitor = QualityMonitor(ID, QualitySettings(window=1000, pair_sample=2, recent=5))
    for u in units:
        monitor.observe(1.0, u)
    report = monitor.report()
    assert report.cosine_distance.count == 1 + 2 * 38  # 0, then 1, then 2 per embedding
    possible = np.array(
        [1.0 - float(units[j] @ units[i]) for i in range(40) for j in range(max(0, i - 5), i)]
    )
    got = monitor._distances.values()
    assert all(np.abs(possible - d).min() < 1e-5 for d in got)


@pytest.fixture(scope="module")
def perch_windows(perch_engine: EmbeddingEngine) -> tuple[EmbeddingEngine, list]:
    model = perch_engine.model("perch-contract")
    options = EmbedOptions(top_k=0, energy_threshold=0.0)
    config = perch_engine.preprocess_config(model, options)
    windows = list(islice(prepare_windows(audio("soundscape_birdnet_120s_48k.flac"), config), 24))
    return perch_engine, windows


def test_outlier_is_flagged_in_json_and_parquet(perch_windows: tuple, tmp_path: Path) -> None:
    engine, windows = perch_windows
    model = engine.model("perch-contract")
    batch = np.stack([w.samples for w in windows])
    emb = engine.run_batch(model, batch, [OutputRole.EMBEDDING])[OutputRole.EMBEDDING]
    # 120 real windows (each seen five times), then the same window with a raw norm 50x.
    series = np.concatenate([*([emb] * 5), emb[:1] * 50.0])
    pending = [("rec", windows[i % len(windows)]) for i in range(series.shape[0])]
    metas = [InferenceMeta(model.identity, "cpu", 0, 1, 0.0)] * len(pending)
    results = list(to_results(pending, series, None, None, metas, None, 0, False))
    monitors = QualityMonitors(QualitySettings(anomaly_threshold=4.0))
    flagged = monitors.observe(results)
    flags = [r.quality.flags() for r in flagged]
    assert "anomalous_norm" in flags[-1]
    assert not any("anomalous_norm" in f for f in flags[:-1])
    assert flagged[-1].quality.is_valid  # a flag, not invalidity

    outcome = EmbedOutcome(
        artifact=model.artifact,
        results=flagged[-3:],
        stats=StreamStats(),
        route="cpu",
        providers=["cpu"],
        fallback=False,
        window_s=5.0,
        hop_s=2.5,
        routing_key_hash="-",
        timing=Timing.of(StreamStats(), total_s=0.0),
    )
    answer = to_response(outcome, "r")
    assert "anomalous_norm" in answer.windows[-1].quality.flags
    path = tmp_path / "out.parquet"
    writer = ParquetWriter(path, model.manifest.embedding_dim)
    for r in flagged[-3:]:
        writer.write(r)
    writer.close({})
    assert pq.read_table(path).column("quality_flags").to_pylist()[-1] == ["anomalous_norm"]
    report = monitors.reports()[0]
    assert report.seen == len(results) and report.anomalies_total == 1


def test_cli_embed_puts_the_report_in_its_summary(
    perch_artifact: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tiny history and threshold, so that real windows get flagged.
    monkeypatch.setenv("SEVENSENSE_QUALITY__MIN_HISTORY", "4")
    monkeypatch.setenv("SEVENSENSE_QUALITY__ANOMALY_THRESHOLD", "0.5")
    out = tmp_path / "o.parquet"
    run = CliRunner().invoke(
        main,
        [
            "embed",
            str(audio("soundscape_birdnet_120s_48k.flac")),
            "--model",
            "perch-contract",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert run.exit_code == 0, run.output
    table = pq.read_table(out)
    summary = json.loads(pq.read_metadata(out).metadata[b"sevensense"])
    (report,) = summary["quality"]
    assert report["model"] == "perch-contract" and report["seen"] == table.num_rows
    flagged = sum("anomalous_norm" in f for f in table.column("quality_flags").to_pylist())
    assert flagged == report["anomalies_total"] > 0
