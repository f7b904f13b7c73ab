"""BirdNET verification (ADR-007 §7) without a server: the species map from the real label
files, the alignment of 5-s and 3-s windows, the agreement maths, one decode feeding both
models, and `sevensense verify` with the real BirdNET, its int8 variant and the
Perch-contract model on real recordings."""

from __future__ import annotations

import tracemalloc
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from click.testing import CliRunner

from sevensense.artifacts.registry import ModelRegistry
from sevensense.audio.pipeline import StreamStats, prepare_windows
from sevensense.cli import main
from sevensense.errors import ModelNotFoundError
from sevensense.inference.engine import EmbeddingEngine, EmbedOptions
from sevensense.serving.stream.resume import Tally
from sevensense.verification.agreement import (
    BELOW_THRESHOLD,
    NO_VERIFIER_WINDOW,
    WindowVerification,
    compare_window,
    summarize,
    summary_of,
    verify_sequence,
)
from sevensense.verification.alignment import Aligner, assign, max_pool
from sevensense.verification.offline import verify_recordings
from sevensense.verification.parquet import read_report
from sevensense.verification.species_map import build_species_map, species_map_for
from sevensense.verification.streams import paired_windows
from tests.conftest import MODELS, audio

YELLOWTHROAT = audio("labelled/common_yellowthroat.mp3")
SAMPLE_3S = audio("birdnet_sample_3s_48k.wav")


# --- species map -------------------------------------------------------------------------------


def test_species_map_folds_names_and_never_matches_sound_events() -> None:
    m = build_species_map(
        ["Turdus  merula", "DOG", "Parus major", "Corvus corone", "Human_voice"],
        ["parus major", "Turdus merula", "Dog", "Human vocal", "Sitta europaea"],
    )
    assert m.to_verifier.tolist() == [1, -1, 0, -1, -1]
    assert m.to_primary.tolist() == [2, 0, -1, -1, -1]
    assert m.mapped == 2
    assert m.shared_sound_events == ("Dog",)
    assert m.unmatched_verifier() == ["Dog", "Human vocal", "Sitta europaea"]


def test_perch_labels_map_onto_birdnet(registry: ModelRegistry) -> None:
    m = species_map_for(registry.resolve("perch-contract"), registry.resolve("birdnet-v2.4"))
    # 6,266 BirdNET classes share a name with the stand-in Perch list; four of them are
    # sound events (FSD50K's Dog, Engine, Fireworks, Siren), so 6,262 species map.
    assert (m.mapped, len(m.verifier_labels), len(m.primary_labels)) == (6262, 6522, 14795)
    assert m.shared_sound_events == ("Dog", "Engine", "Fireworks", "Siren")
    assert len(m.unmatched_verifier()) == 260
    for i in m.verifier_mapped[:50]:
        assert m.primary_labels[m.to_primary[i]].casefold() == m.verifier_labels[i].casefold()
    assert (
        species_map_for(registry.resolve("perch-contract"), registry.resolve("birdnet-v2.4")) is m
    )  # cached


def test_labels_map_command() -> None:
    runner = CliRunner()
    args = ["--models-dir", str(MODELS), "models", "labels-map", "perch-v2", "birdnet-v2.4"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "6,262 of 6,522 classes" in result.output
    assert "Dog, Engine, Fireworks, Siren" in result.output
    listed = runner.invoke(main, [*args, "--unmatched"])
    names = listed.output.splitlines()[1:]
    assert len(names) == 260 and "Dog" in names and "Turdus merula" not in names


# --- alignment ---------------------------------------------------------------------------------


def test_alignment_by_centre_at_window_boundaries() -> None:
    # Perch 5-s windows, hop 2.5 s; BirdNET 3-s windows at 0, 3, 6, 9 (centres 1.5 … 10.5).
    primary = [(0.0, 5.0), (2.5, 7.5), (5.0, 10.0), (7.5, 12.5)]
    centres = [1.5, 4.5, 7.5, 10.5]
    # 7.5 lies exactly on the end of [2.5, 7.5] and the start of [7.5, 12.5]: both count it.
    assert assign(primary, centres) == [[0, 1], [1, 2], [2], [2, 3]]
    # A BirdNET window merely overlapping a primary window (3–6 overlaps [5, 10]) is not
    # counted for it unless its centre is inside.
    assert 1 not in assign([(5.0, 10.0)], centres)[0]


def test_streaming_aligner_equals_assign_and_max_pool() -> None:
    rng = np.random.default_rng(3)
    starts = [3.0 * j for j in range(12)]
    scores = [rng.random(7).astype(np.float32) for _ in starts]
    spans = [(2.5 * i, 2.5 * i + 5.0) for i in range(13)]
    expected = assign(spans, [s + 1.5 for s in starts])
    aligner = Aligner(3.0)
    for j, s in enumerate(starts):
        aligner.add(j, s, scores[j])
    for span, want in zip(spans, expected, strict=True):
        pooled, used = aligner.take(*span)
        assert used == want
        ref = max_pool([scores[j] for j in want])
        assert (pooled is None and ref is None) or np.array_equal(pooled, ref)  # type: ignore[arg-type]
    assert len(aligner) <= 2  # only windows around the last span are held


def test_one_decode_feeds_both_models_from_the_source(engine: EmbeddingEngine) -> None:
    """BirdNET's windows are the 16-kHz source resampled to 48 kHz, bit for bit what BirdNET
    alone would get, not the 32-kHz Perch stream upsampled."""
    path = audio("perch_testclip_10s_16k.flac")
    p_config = engine.preprocess_config(engine.registry.resolve("perch-contract").manifest)
    birdnet = engine.registry.resolve("birdnet-v2.4").manifest
    v_config = engine.preprocess_config(birdnet, EmbedOptions(overlap=0.0))
    alone = {w.index: w for w in prepare_windows(path, v_config)}
    primary_alone = list(prepare_windows(path, p_config))
    pairs = list(paired_windows(path, p_config, v_config, StreamStats(), StreamStats()))
    assert [w.index for w, _ in pairs] == [w.index for w in primary_alone]
    for (w, vs), ref in zip(pairs, primary_alone, strict=True):
        assert np.array_equal(w.samples, ref.samples)
        assert vs, "every 5-s window has a BirdNET window centred in it"
        for v in vs:
            assert v.sample_rate == 48000
            assert w.start_s <= v.start_s + 1.5 <= w.start_s + 5.0
            assert np.array_equal(v.samples, alone[v.index].samples)
    spans = [(w.start_s, w.start_s + 5.0) for w in primary_alone]
    claimed = assign(spans, [alone[i].start_s + 1.5 for i in sorted(alone)])
    assert {v.index for _, vs in pairs for v in vs} == {j for js in claimed for j in js}


def test_one_decode_stays_bounded_through_long_silence(
    engine: EmbeddingEngine, tmp_path: Path
) -> None:
    """Both chains skip silence; neither may run ahead of the other and leave the tee
    buffering the whole silence: the peak does not grow with its length."""
    p_config = engine.preprocess_config(engine.registry.resolve("perch-contract").manifest)
    birdnet = engine.registry.resolve("birdnet-v2.4").manifest
    v_config = engine.preprocess_config(birdnet, EmbedOptions(overlap=0.0))
    assert p_config.energy_threshold > 0 and v_config.energy_threshold > 0
    peaks = []
    for minutes in (1, 4):
        rate = 48000
        x = np.zeros(minutes * 60 * rate, dtype=np.float32)
        x[-6 * rate :] = 0.3 * np.sin(2 * np.pi * 3000 * np.arange(6 * rate) / rate)
        path = tmp_path / f"silence_{minutes}.wav"
        sf.write(path, x, rate, subtype="PCM_16")
        del x
        tracemalloc.start()
        pairs = [
            (w.start_s, [v.start_s for v in vs])
            for w, vs in paired_windows(path, p_config, v_config, StreamStats(), StreamStats())
        ]
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert pairs and all(start >= minutes * 60 - 11 for start, _ in pairs)  # the tone only
        tone = minutes * 60 - 6
        assert all(vs for start, vs in pairs if start >= tone)  # BirdNET hears the tone too
    # Three more minutes buffered would be 35 MB of 48-kHz float32.
    assert peaks[1] < peaks[0] + 4e6, peaks


# --- agreement ---------------------------------------------------------------------------------


def _scores(n: int, high: dict[int, float]) -> np.ndarray:
    s = np.full(n, 0.01, dtype=np.float32)
    for i, v in high.items():
        s[i] = v
    return s


def test_agreement_top5_over_mapped_classes_only() -> None:
    labels = [f"Genus s{chr(97 + i)}" for i in range(12)]
    m = build_species_map([*labels, "Only inprimary"], labels)
    same = {0: 0.9, 1: 0.8, 2: 0.7, 3: 0.6, 4: 0.55}
    # The primary's best class has no BirdNET counterpart: it must not crowd the top 5.
    primary = np.append(_scores(12, same), np.float32(0.99))
    v = compare_window(
        primary, _scores(12, same), m, birdnet_threshold=0.5, discrepancy_threshold=0.5
    )
    assert v.agreement == 1.0 and v.discrepancies == []
    other = {7: 0.9, 8: 0.6, 9: 0.3, 10: 0.2, 11: 0.1}
    v = compare_window(
        primary, _scores(12, other), m, birdnet_threshold=0.5, discrepancy_threshold=0.5
    )
    assert v.agreement == 0.0
    flagged = {
        (d.species, d.flagged_by): (d.primary_score, d.verifier_score) for d in v.discrepancies
    }
    assert flagged[("Genus sa", "primary")] == pytest.approx((0.9, 0.01))
    assert flagged[("Genus sh", "verifier")] == pytest.approx((0.01, 0.9))
    assert ("Genus sj", "verifier") not in flagged  # 0.3 is under the discrepancy threshold
    quiet = compare_window(
        primary, _scores(12, {3: 0.4}), m, birdnet_threshold=0.5, discrepancy_threshold=0.5
    )
    assert quiet.agreement is None and quiet.reason == BELOW_THRESHOLD
    assert quiet.verifier_top5[0].species == "Genus sd"
    none = compare_window(primary, None, m, birdnet_threshold=0.5, discrepancy_threshold=0.5)
    assert none.agreement is None and none.reason == NO_VERIFIER_WINDOW
    s = summarize([v, quiet, none])
    assert (s.windows, s.counted, s.mean, s.null_reasons) == (
        3,
        1,
        0.0,
        {BELOW_THRESHOLD: 1, NO_VERIFIER_WINDOW: 1},
    )


def test_verify_sequence_pools_neighbours_by_max() -> None:
    labels = [f"Genus s{chr(97 + i)}" for i in range(8)]
    m = build_species_map(labels, labels)
    a, b = _scores(8, {0: 0.9}), _scores(8, {1: 0.7})
    out = verify_sequence(
        [(0.0, a), (5.0, a)],
        [(0, 0.0, a), (1, 3.0, b), (2, 6.0, b)],
        primary_window_s=5.0,
        verifier_window_s=3.0,
        species_map=m,
        birdnet_threshold=0.5,
        discrepancy_threshold=0.5,
    )
    assert [o.verifier_windows for o in out] == [2, 1]
    assert [s.species for s in out[0].verifier_top5[:2]] == ["Genus sa", "Genus sb"]


# --- offline runner, real models -------------------------------------------------------------


@pytest.fixture(scope="module")
def verify_engine(birdnet_artifact: object, perch_artifact: object) -> EmbeddingEngine:
    from tests.conftest import make_settings

    return EmbeddingEngine(make_settings())


def test_int8_birdnet_agrees_with_birdnet(verify_engine: EmbeddingEngine) -> None:
    rows: list[object] = []
    report = verify_recordings(
        [YELLOWTHROAT, SAMPLE_3S],
        model="birdnet-v2.4:2.4.0:quantized",
        engine=verify_engine,
        sink=rows.append,
    )
    assert not report.trivial and report.against == "birdnet-v2.4:2.4.0:base"
    assert report.overall.counted >= 2 and len(rows) == report.overall.windows
    assert report.overall.mean is not None and report.overall.mean >= 0.8
    assert report.passed() is True
    assert all(r.status == "ok" for r in report.recordings)


def test_random_perch_contract_disagrees_and_discrepancies_are_reported(
    verify_engine: EmbeddingEngine,
) -> None:
    report = verify_recordings([YELLOWTHROAT], model="perch-contract", engine=verify_engine)
    assert report.mapped_classes == 6262
    assert report.overall.counted >= 1
    assert report.overall.mean is not None and report.overall.mean <= 0.2
    assert report.overall.discrepancies > 0
    assert report.passed() is False


def test_birdnet_itself_is_verified_trivially(verify_engine: EmbeddingEngine) -> None:
    report = verify_recordings([YELLOWTHROAT], model="birdnet-v2.4", engine=verify_engine)
    assert report.trivial and "verifier itself" in (report.trivial_reason or "")
    assert report.overall.mean is None and report.passed() is None


def test_unknown_verifier_is_a_clear_error(verify_engine: EmbeddingEngine) -> None:
    with pytest.raises(ModelNotFoundError, match="unknown verifier 'birdnet-v9'"):
        verify_recordings(
            [YELLOWTHROAT], model="perch-contract", against="birdnet-v9", engine=verify_engine
        )


def test_verify_command_exit_codes_and_rows(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--models-dir", str(MODELS), "verify"]
    out = tmp_path / "v.parquet"
    ok = runner.invoke(
        main,
        [*base, str(YELLOWTHROAT), "--model", "birdnet-v2.4:2.4.0:quantized", "--out", str(out)],
    )
    assert ok.exit_code == 0, ok.output
    assert "mean agreement" in ok.output and "at >= 0.8" in ok.output
    table = pq.read_table(out)
    assert table.num_rows == 2
    assert set(table.column("verifier_model").to_pylist()) == {"birdnet-v2.4:2.4.0:base"}
    assert all(len(t) == 5 for t in table.column("verifier_top5").to_pylist())
    assert read_report(out)["overall"]["windows"] == 2

    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really")
    partial = runner.invoke(
        main, [*base, str(YELLOWTHROAT), str(bad), "--model", "perch-contract", "--out", str(out)]
    )
    assert partial.exit_code == 1
    assert f"failed: {bad}: [" in partial.output

    none = runner.invoke(main, [*base, str(bad), "--model", "perch-contract", "--out", str(out)])
    assert none.exit_code == 2

    unknown = runner.invoke(
        main,
        [
            *base,
            str(YELLOWTHROAT),
            "--model",
            "perch-contract",
            "--against",
            "nope",
            "--out",
            str(tmp_path / "u.parquet"),
        ],
    )
    assert unknown.exit_code == 2
    assert "unknown verifier 'nope'" in unknown.output
    assert not (tmp_path / "u.parquet").exists()

    trivial = runner.invoke(
        main, [*base, str(YELLOWTHROAT), "--model", "birdnet-v2.4", "--out", str(out)]
    )
    assert trivial.exit_code == 0 and "verified trivially" in trivial.output
    assert "1.000" not in trivial.output


def test_a_stream_agreement_tally_split_across_tasks_sums_to_the_whole() -> None:
    """What a resume token carries for a verify=true stream: the totals of the windows one
    task verified, continued by the next, give the summary of all the windows at once."""
    rng = np.random.default_rng(3)
    windows = [
        WindowVerification(agreement=None, reason=BELOW_THRESHOLD)
        if rng.random() < 0.3
        else WindowVerification(agreement=int(rng.integers(0, 6)) / 5)
        for _ in range(57)
    ]
    first = Tally()
    for v in windows[:20]:
        first.add(v)
    carried = Tally.model_validate_json(first.model_dump_json())  # through the token
    for v in windows[20:]:
        carried.add(v)
    reasons: Counter[str] = Counter(v.reason or "" for v in windows if v.agreement is None)
    agreements = [v.agreement for v in windows if v.agreement is not None]
    assert carried.summary() == summary_of(agreements, len(windows), 0, reasons)
