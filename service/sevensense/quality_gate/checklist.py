"""ADR-007 Appendix B, the embedding-quality checklist, as eight measured items.

Each item reports its figure, the threshold it is judged by and pass / fail (or n/a with the
reason, or error when it could not be measured). The thresholds below are the ADR's where
it gives one and documented choices where it does not:

* isotropy: a dimension is *near-zero variance* when its variance across the reference
  windows is under 1e-3 of the mean per-dimension variance; at most 5 % of dimensions may
  be so, and the participation ratio of the covariance spectrum, (Σλ)² / Σλ², must be at
  least 2.5 (an embedding squeezed onto a line or a plane has at most 1 or 2). Measured on
  the default set: BirdNET v2.4 about 22, the random-weight Perch-contract model 4 to 5.
  Windows the post-processing flagged (NaN/Inf, zero norm) are left out: they were
  replaced by the unit vector e0 and are the ``finite`` item's business.
* silence: every window of generated silence (several lengths, padded tails included)
  within cosine 0.99 of every other.
* inter-batch consistency: the same windows alone (batch 1), in a batch of 8, and among
  other neighbours; max |Δ| of the L2-normalised embeddings ≤ 1e-5.

The math is in pure functions over arrays; :func:`run_check` does the embedding.
"""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field, computed_field

from sevensense.artifacts.manifest import OutputRole
from sevensense.audio.decode import AudioSource
from sevensense.audio.pipeline import StreamStats, prepare_windows
from sevensense.audio.windowing import Window
from sevensense.errors import SevensenseError
from sevensense.inference.engine import EmbeddingEngine, EmbedOptions, WindowResult
from sevensense.inference.postprocess import NORM_RANGE, l2_normalize
from sevensense.inference.sessions import LoadedModel
from sevensense.outputs.response import EmbedOutcome, Timing, to_arrow, to_response
from sevensense.outputs.writers import ParquetWriter
from sevensense.quality_gate.reference import ReferenceSet, reference_set
from sevensense.settings import ChecksSettings

# Bump when an item, a threshold or the reference set changes: stored results re-run.
CHECKLIST_VERSION = "1"

DUPLICATE_MIN_COSINE = 0.99
SILENCE_MIN_COSINE = 0.99
NEAR_ZERO_VARIANCE = 1e-3
MAX_NEAR_ZERO_SHARE = 0.05
MIN_PARTICIPATION_RATIO = 2.5
BATCH_MAX_DELTA = 1e-5
BATCH = 8
DUPLICATE_WINDOWS = 4
SINGLES = 4  # windows also run alone, at batch 1
VERIFIER = "birdnet-v2.4"

Status = Literal["pass", "fail", "n/a", "error"]
Figure = dict[str, float | int | str | None]

ITEMS = (
    ("norms", "norms within [0.99, 1.01] after L2 normalisation"),
    ("finite", "no NaN or Inf in any embedding"),
    ("duplicates", "duplicate audio: cosine > 0.99"),
    ("silence", "silence gives one consistent embedding"),
    ("isotropy", "roughly isotropic, no collapsed dimensions"),
    ("batch_consistency", "same audio, same embedding across batches"),
    ("model_version", "model version recorded with every embedding"),
    ("birdnet_agreement", "BirdNET cross-validation > 80 % top-5 agreement"),
)
TITLES = dict(ITEMS)


class ItemResult(BaseModel):
    id: str
    title: str
    status: Status
    figure: Figure = Field(default_factory=dict)
    threshold: str = ""
    detail: str = ""


def item(id_: str, ok: bool, figure: Figure, threshold: str, detail: str = "") -> ItemResult:
    return ItemResult(
        id=id_,
        title=TITLES[id_],
        status="pass" if ok else "fail",
        figure=figure,
        threshold=threshold,
        detail=detail,
    )


def not_run(id_: str, status: Status, detail: str, figure: Figure | None = None) -> ItemResult:
    return ItemResult(id=id_, title=TITLES[id_], status=status, figure=figure or {}, detail=detail)


class CheckResult(BaseModel):
    model: str
    sha256: str
    checklist_version: str = CHECKLIST_VERSION
    checked_at: datetime
    audio_dir: str
    windows: int = Field(description="windows embedded for the check")
    seconds: float
    items: list[ItemResult]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> bool:
        return all(i.status in ("pass", "n/a") for i in self.items)

    def failed(self) -> list[str]:
        """Items that fail the gate: failed or not measurable."""
        return [i.id for i in self.items if i.status in ("fail", "error")]

    def exit_code(self) -> int:
        if any(i.status == "fail" for i in self.items):
            return 1
        return 2 if any(i.status == "error" for i in self.items) else 0


# --- the pure figures ----------------------------------------------------------------------


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: np.ndarray = np.einsum("ij,ij->i", x, y) / (
            np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
        )
    return out


def norms_item(norms: np.ndarray) -> ItemResult:
    inside = (norms >= NORM_RANGE[0]) & (norms <= NORM_RANGE[1])
    finite = norms[np.isfinite(norms)]
    return item(
        "norms",
        bool(inside.all()) and norms.size > 0,
        {
            "windows": int(norms.size),
            "outside": int((~inside).sum()),
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
        },
        f"every norm in [{NORM_RANGE[0]}, {NORM_RANGE[1]}]",
    )


def finite_item(quality: list[tuple[bool, bool]]) -> ItemResult:
    """``quality``: (has_nan, has_inf) per window, from the post-processing's own checks."""
    nan = sum(1 for n, _ in quality if n)
    inf = sum(1 for _, i in quality if i)
    return item(
        "finite",
        nan == 0 and inf == 0 and bool(quality),
        {"windows": len(quality), "with_nan": nan, "with_inf": inf},
        "0 windows with NaN or Inf",
    )


def duplicates_item(original: np.ndarray, copies: dict[str, np.ndarray]) -> ItemResult:
    if original.shape[0] == 0 or not copies:
        return not_run("duplicates", "error", "no lossless reference recording (16-bit WAV)")
    figure: Figure = {"windows": int(original.shape[0])}
    worst = np.inf
    for name, emb in copies.items():
        if emb.shape != original.shape:
            return item("duplicates", False, figure, "", f"{name}: {emb.shape[0]} windows")
        low = float(np.min(_cosines(original, emb)))
        figure[f"min_cosine_{name}"] = low
        worst = min(worst, low) if np.isfinite(low) else -np.inf
    figure["min_cosine"] = float(worst) if np.isfinite(worst) else None
    return item("duplicates", bool(worst > DUPLICATE_MIN_COSINE), figure, "min cosine > 0.99")


def silence_item(emb: np.ndarray, zero_norm: int) -> ItemResult:
    if emb.shape[0] < 2:
        return not_run("silence", "error", "fewer than two silent windows embedded")
    x = emb.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    low = float(np.min(unit @ unit.T))
    return item(
        "silence",
        bool(np.isfinite(low) and low >= SILENCE_MIN_COSINE),
        {
            "windows": int(emb.shape[0]),
            "min_pairwise_cosine": low if np.isfinite(low) else None,
            "zero_norm": zero_norm,
        },
        "min pairwise cosine ≥ 0.99",
        "zero_norm windows are the flagged unit vector e0" if zero_norm else "",
    )


def spectrum(emb: np.ndarray) -> tuple[float, float]:
    """(share of near-zero-variance dimensions, participation ratio of the covariance)."""
    x = emb.astype(np.float64)
    var = x.var(axis=0)
    mean_var = float(var.mean())
    share = float(np.mean(var < NEAR_ZERO_VARIANCE * mean_var)) if mean_var > 0 else 1.0
    centred = x - x.mean(axis=0)
    # The non-zero eigenvalues of the covariance are those of the (smaller) Gram matrix.
    gram = centred @ centred.T if x.shape[0] < x.shape[1] else centred.T @ centred
    lam = np.clip(np.linalg.eigvalsh(gram / max(1, x.shape[0] - 1)), 0.0, None)
    total = float((lam**2).sum())
    ratio = float(lam.sum() ** 2 / total) if total > 0 else 0.0
    return share, ratio


def isotropy_item(emb: np.ndarray) -> ItemResult:
    finite = emb[np.isfinite(emb).all(axis=1)]
    if finite.shape[0] < 3:
        return not_run("isotropy", "fail", "fewer than three finite embeddings")
    share, ratio = spectrum(finite)
    return item(
        "isotropy",
        share <= MAX_NEAR_ZERO_SHARE and ratio >= MIN_PARTICIPATION_RATIO,
        {
            "windows": int(finite.shape[0]),
            "dims": int(finite.shape[1]),
            "near_zero_variance_share": share,
            "participation_ratio": ratio,
            "excluded_non_finite": int(emb.shape[0] - finite.shape[0]),
        },
        f"near-zero-variance share ≤ {MAX_NEAR_ZERO_SHARE}, participation ratio ≥ "
        f"{MIN_PARTICIPATION_RATIO:g}",
    )


def batch_item(deltas: dict[str, float]) -> ItemResult:
    worst = max(deltas.values()) if deltas else np.nan
    return item(
        "batch_consistency",
        bool(np.isfinite(worst) and worst <= BATCH_MAX_DELTA),
        {"max_abs_delta": worst if np.isfinite(worst) else None, **deltas},
        "max |Δ| ≤ 1e-5 (L2-normalised)",
    )


# --- measuring -----------------------------------------------------------------------------


def _options() -> EmbedOptions:
    # Silence must reach the model (no energy gate); scores are not needed here.
    return EmbedOptions(energy_threshold=0.0, top_k=0)


def _embed(
    engine: EmbeddingEngine, model: LoadedModel, source: AudioSource, name: str, limit: int
) -> list[WindowResult]:
    results = engine.embed_file(source, model=model, options=_options(), name=name)
    return list(islice(results, limit))


def _raw_batch(engine: EmbeddingEngine, model: LoadedModel, batch: np.ndarray) -> np.ndarray:
    out = engine.run_batch(model, np.ascontiguousarray(batch), [OutputRole.EMBEDDING])
    return l2_normalize(out[OutputRole.EMBEDDING])[0]


def _windows(
    engine: EmbeddingEngine, model: LoadedModel, sources: Iterable[Path], per_file: int
) -> list[tuple[str, Window]]:
    """The first ``per_file`` windows of each recording; one that fails to decode is left
    out (the reference set is for the model, not the decoder)."""
    config = engine.preprocess_config(model, _options())
    found: list[tuple[str, Window]] = []
    for source in sources:
        try:
            found.extend(
                (str(source), w) for w in islice(prepare_windows(source, config), per_file)
            )
        except SevensenseError:
            continue
    return found


def batch_deltas(
    engine: EmbeddingEngine, model: LoadedModel, windows: np.ndarray
) -> dict[str, float]:
    """Max |Δ| of the first windows at batch 1 against the same windows in a batch of 8,
    and of the first window among ``BATCH - 1`` other neighbours."""
    first = windows[:BATCH]
    singles = np.concatenate([_raw_batch(engine, model, first[i : i + 1]) for i in range(SINGLES)])
    together = _raw_batch(engine, model, first)
    others = np.concatenate([first[:1], windows[BATCH : 2 * BATCH - 1]])
    neighbours = _raw_batch(engine, model, others)[:1]

    def delta(a: np.ndarray, b: np.ndarray) -> float:
        d = np.abs(a.astype(np.float64) - b)
        return float(d.max()) if np.isfinite(d).all() else float("nan")

    return {
        "batch1_vs_batch8": delta(singles, together[:SINGLES]),
        "batch1_vs_other_neighbours": delta(singles[:1], neighbours),
        "batch8_vs_other_neighbours": delta(together[:1], neighbours),
    }


def model_version_item(
    engine: EmbeddingEngine, model: LoadedModel, results: list[WindowResult]
) -> ItemResult:
    """Through the code every face writes with: the CLI's and the worker's Parquet writer,
    the JSON answer of ``/embed`` and of deferred jobs, and its Arrow form."""
    identity = model.identity
    want = (identity.name, identity.version, identity.variant)
    if not results:
        return not_run("model_version", "error", "nothing embedded")
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sevensense-check-") as tmp:
        path = Path(tmp) / "check.parquet"
        writer = ParquetWriter(path, model.manifest.embedding_dim)
        for r in results:
            writer.write(r)
        writer.close({"model": str(identity)})
        table = pq.read_table(path)
    parquet_rows = _rows_with(table, want)
    if parquet_rows != len(results):
        problems.append(f"Parquet: {len(results) - parquet_rows} rows without {identity}")
    outcome = EmbedOutcome(
        artifact=model.artifact,
        results=results,
        stats=StreamStats(),
        route="check",
        providers=[model.provider],
        fallback=False,
        window_s=model.manifest.window_samples / model.manifest.sample_rate,
        hop_s=0.0,
        routing_key_hash="-",
        timing=Timing.of(StreamStats(), total_s=0.0),
    )
    answer = to_response(outcome, "check")
    if (answer.model.name, answer.model.version, answer.model.variant) != want:
        problems.append(f"JSON answer names {answer.model}, not {identity}")
    arrow = pa.ipc.open_stream(io.BytesIO(to_arrow(outcome, "check"))).read_all()
    arrow_rows = _rows_with(arrow, want)
    if arrow_rows != len(results):
        problems.append(f"Arrow: {len(results) - arrow_rows} rows without {identity}")
    return item(
        "model_version",
        not problems,
        {"windows": len(results), "parquet_rows": parquet_rows, "arrow_rows": arrow_rows},
        "every row and answer names model, version and variant",
        "; ".join(problems),
    )


def _rows_with(table: pa.Table, want: tuple[str, str, str]) -> int:
    cols = [table.column(c).to_pylist() for c in ("model_name", "model_version", "model_variant")]
    return sum(1 for row in zip(*cols, strict=True) if tuple(row) == want)


def birdnet_item(
    engine: EmbeddingEngine, model: LoadedModel, labelled: list[Path], minimum: float
) -> ItemResult:
    if not labelled:
        return not_run("birdnet_agreement", "error", "no labelled recordings (labelled/)")
    try:
        from sevensense.verification.offline import verify_recordings
    except ImportError as exc:  # the verifier package is another piece of this issue
        return not_run("birdnet_agreement", "error", f"verification unavailable: {exc}")
    try:
        report = verify_recordings(
            labelled, model=str(model.identity), against=VERIFIER, engine=engine
        )
    except SevensenseError as exc:
        return not_run("birdnet_agreement", "error", f"[{exc.code}] {exc.message}")
    if report.trivial:
        return not_run(
            "birdnet_agreement", "n/a", report.trivial_reason or "the model is BirdNET itself"
        )
    overall = report.overall
    figure: Figure = {
        "recordings": len(report.recordings),
        "windows": overall.windows,
        "counted": overall.counted,
        "mean_agreement": overall.mean,
        "share_ge_0_8": overall.share_ge_0_8,
        "discrepancies": overall.discrepancies,
        "mapped_classes": report.mapped_classes,
    }
    if overall.mean is None:
        return not_run(
            "birdnet_agreement",
            "error",
            "no labelled window where BirdNET's best score reaches its threshold",
            figure,
        )
    return item(
        "birdnet_agreement",
        overall.mean > minimum,
        figure,
        f"mean top-5 agreement > {minimum:g} on windows BirdNET is sure of",
    )


def _model_made(r: WindowResult) -> bool:
    q = r.quality
    return not (q.has_nan or q.has_inf or q.zero_norm)


def run_check(
    engine: EmbeddingEngine,
    ref: str,
    audio_dir: Path | None = None,
    settings: ChecksSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> CheckResult:
    """All eight items on the reference set; raises only when the model cannot be loaded
    or the reference set is missing (the command's exit 2)."""
    settings = settings or engine.settings.checks
    started = time.perf_counter()
    model = engine.model(ref)
    refs: ReferenceSet = reference_set(audio_dir, settings)
    say = progress or (lambda _: None)
    say(f"embedding {len(refs.recordings)} reference recordings")
    windows = _windows(engine, model, refs.recordings, settings.windows_per_file)
    # One embed_windows call: windows of consecutive recordings share full batches.
    reference = list(engine.embed_windows(model, windows, _options()))
    silent = [
        r for name, data in refs.silence.items() for r in _embed(engine, model, data, name, 64)
    ]
    original: list[WindowResult] = []
    copies: dict[str, list[WindowResult]] = {}
    if refs.original is not None:
        original = _embed(engine, model, refs.original, str(refs.original), DUPLICATE_WINDOWS)
        copies = {
            k: _embed(engine, model, v, k, DUPLICATE_WINDOWS) for k, v in refs.reencoded.items()
        }
    everything = [*reference, *silent, *original, *(r for c in copies.values() for r in c)]

    def stack(rows: list[WindowResult]) -> np.ndarray:
        dim = model.manifest.embedding_dim
        return np.stack([r.embedding for r in rows]) if rows else np.zeros((0, dim))

    say("measuring")
    items = [
        norms_item(np.array([r.quality.norm for r in everything], dtype=np.float64)),
        finite_item([(r.quality.has_nan, r.quality.has_inf) for r in everything]),
        duplicates_item(stack(original), {k: stack(v) for k, v in copies.items()}),
        silence_item(stack(silent), sum(r.quality.zero_norm for r in silent)),
        isotropy_item(stack([r for r in reference if _model_made(r)])),
    ]
    need = 2 * BATCH - 1
    if len(windows) < need:  # a small reference set: take more windows of each recording
        windows = _windows(engine, model, refs.recordings, need)
    if len(windows) < need:
        items.append(not_run("batch_consistency", "error", "too few reference windows"))
    else:
        samples = np.stack([w.samples for _, w in windows[:need]])
        items.append(batch_item(batch_deltas(engine, model, samples)))
    items.append(model_version_item(engine, model, reference))
    say("BirdNET cross-validation")
    items.append(birdnet_item(engine, model, refs.labelled, settings.agreement_min))
    return CheckResult(
        model=str(model.identity),
        sha256=model.manifest.sha256,
        checked_at=datetime.now(UTC),
        audio_dir=str(refs.root),
        windows=len(everything) + SINGLES + 2 * BATCH,
        seconds=round(time.perf_counter() - started, 3),
        items=items,
    )
