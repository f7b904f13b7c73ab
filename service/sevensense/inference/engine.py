"""The embedding engine: recordings in, validated per-window embeddings and scores out.

One engine serves the CLI, the batch worker, the BentoML service and the tests. It owns
no I/O beyond reading the audio source it is handed; writing results is the caller's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from sevensense.artifacts.manifest import ModelIdentity, ModelManifest, OutputRole
from sevensense.artifacts.registry import ModelRegistry
from sevensense.audio.decode import AudioSource
from sevensense.audio.normalize import NormalizationSpec
from sevensense.audio.pipeline import PreprocessConfig, StreamStats, prepare_windows
from sevensense.audio.windowing import Padding, Window
from sevensense.errors import InferenceError
from sevensense.inference.postprocess import EmbeddingQuality, assess, l2_normalize, top_k
from sevensense.inference.prefetch import prefetched
from sevensense.inference.sessions import LoadedModel, SessionManager
from sevensense.inference.species_range import allowed_mask
from sevensense.settings import Settings, load_settings


@dataclass(frozen=True)
class InferenceMeta:
    model: ModelIdentity
    provider: str
    batch_index: int
    batch_size: int
    inference_ms: float


@dataclass(frozen=True)
class WindowResult:
    source: str
    index: int
    start_s: float
    end_s: float
    padded_samples: int
    embedding: np.ndarray
    quality: EmbeddingQuality
    meta: InferenceMeta
    top_k: list[tuple[str, float]] = field(default_factory=list)
    logits: np.ndarray | None = None
    spectrogram: np.ndarray | None = None
    custom: list[tuple[str, float]] | None = None  # a custom classifier's (class, score)


@dataclass(frozen=True)
class EmbedOptions:
    """Per-call choices; None means "the profile's / model's default"."""

    overlap: float | None = None
    padding: Padding | None = None
    energy_threshold: float | None = None
    normalization: str | None = None
    resample_quality: str | None = None
    top_k: int | None = None
    include_logits: bool = False
    include_spectrogram: bool = False
    max_duration_s: float | None = None
    species: tuple[str, ...] | None = None  # a species filter: top-k only among these
    min_tail_s: float | None = None  # BirdNET-Analyzer's segment rule: drop a shorter tail


def _normalization(setting: str, manifest: ModelManifest, settings: Settings) -> NormalizationSpec:
    pre = settings.preprocessing
    if setting == "model":
        return manifest.normalization
    if setting == "perch":
        return NormalizationSpec.perch()
    if setting == "none":
        return NormalizationSpec(method="none", clip=pre.clip)
    return NormalizationSpec(
        method=setting,
        target_peak=pre.target_peak,
        target_rms=pre.target_rms,
        clip=pre.clip,
    )


def preprocess_config(
    settings: Settings, manifest: ModelManifest, options: EmbedOptions | None = None
) -> PreprocessConfig:
    """How to turn audio into this model's windows; needs only the manifest, so the gateway
    windows audio without loading a session."""
    options = options or EmbedOptions()
    pre = settings.preprocessing
    overlap = options.overlap
    if overlap is None:
        overlap = pre.window_overlap if pre.window_overlap is not None else manifest.default_overlap
    return PreprocessConfig(
        sample_rate=manifest.sample_rate,
        window_samples=manifest.window_samples,
        overlap=overlap,
        padding=Padding(options.padding or pre.padding),
        energy_threshold=(
            pre.energy_threshold if options.energy_threshold is None else options.energy_threshold
        ),
        resample_quality=options.resample_quality or pre.resample_quality,
        normalization=_normalization(
            options.normalization or pre.normalization, manifest, settings
        ),
        block_frames=pre.block_frames,
        max_duration_s=options.max_duration_s or pre.max_duration_s,
        min_tail_samples=int(manifest.sample_rate * (options.min_tail_s or 0.0)),
    )


def species_mask(labels: list[str] | None, species: Iterable[str] | None) -> np.ndarray | None:
    """The classes a species filter allows, aligned with the logits; None without a filter."""
    if species is None or labels is None:
        return None
    return allowed_mask(labels, species)


def to_results(
    pending: list[tuple[str, Window]],
    embeddings: np.ndarray,
    logits: np.ndarray | None,
    spectrograms: np.ndarray | None,
    metas: list[InferenceMeta],
    labels: list[str] | None,
    k: int,
    include_logits: bool,
    allowed: np.ndarray | None = None,
) -> Iterator[WindowResult]:
    """Raw model outputs → validated results; shared by the engine and the HTTP gateway."""
    normed, norms = l2_normalize(embeddings)
    for i, (source, window) in enumerate(pending):
        yield WindowResult(
            source=source,
            index=window.index,
            start_s=window.start_s,
            end_s=window.end_s,
            padded_samples=window.padded_samples,
            embedding=normed[i],
            quality=assess(normed[i], float(norms[i])),
            meta=metas[i],
            top_k=top_k(logits[i], labels, k, allowed) if logits is not None else [],
            logits=logits[i].copy() if logits is not None and include_logits else None,
            spectrogram=spectrograms[i].copy() if spectrograms is not None else None,
        )


class EmbeddingEngine:
    def __init__(
        self,
        settings: Settings | None = None,
        registry: ModelRegistry | None = None,
        sessions: SessionManager | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self.registry = registry or ModelRegistry(self.settings.models_dir)
        self.sessions = sessions or SessionManager(self.registry, self.settings.inference)

    # --- models ---------------------------------------------------------------------------

    def model(self, ref: str | None = None) -> LoadedModel:
        return self.sessions.get(ref or self.settings.inference.model)

    def preprocess_config(
        self, model: LoadedModel | ModelManifest, options: EmbedOptions | None = None
    ) -> PreprocessConfig:
        manifest = model if isinstance(model, ModelManifest) else model.manifest
        return preprocess_config(self.settings, manifest, options)

    # --- raw batches ----------------------------------------------------------------------

    def run_batch(
        self, model: LoadedModel, batch: np.ndarray, roles: Iterable[OutputRole]
    ) -> dict[OutputRole, np.ndarray]:
        """One ``session.run`` on an already-prepared [B, window] float32 batch."""
        roles = [r for r in roles if r in model.output_names]
        try:
            outputs = model.session.run(
                [model.output_names[r] for r in roles], {model.input_name: batch}
            )
        except Exception as exc:
            raise InferenceError(f"{model.identity}: inference failed: {exc}") from exc
        return dict(zip(roles, outputs, strict=True))

    def _roles(self, model: LoadedModel, options: EmbedOptions, k: int) -> list[OutputRole]:
        roles = [OutputRole.EMBEDDING]
        if OutputRole.LOGITS in model.output_names and (k > 0 or options.include_logits):
            roles.append(OutputRole.LOGITS)
        if options.include_spectrogram and OutputRole.SPECTROGRAM in model.output_names:
            roles.append(OutputRole.SPECTROGRAM)
        return roles

    # --- windows --------------------------------------------------------------------------

    def embed_windows(
        self,
        model: LoadedModel,
        windows: Iterable[tuple[str, Window]],
        options: EmbedOptions | None = None,
    ) -> Iterator[WindowResult]:
        """Batch windows (possibly from many recordings) up to ``max_batch_size``, in order."""
        options = options or EmbedOptions()
        k = self.settings.top_k if options.top_k is None else options.top_k
        roles = self._roles(model, options, k)
        size = self.settings.inference.max_batch_size
        width = model.manifest.window_samples
        buffer = np.empty((size, width), dtype=np.float32)
        pending: list[tuple[str, Window]] = []
        batch_no = 0

        def flush() -> Iterator[WindowResult]:
            nonlocal batch_no
            n = len(pending)
            start = time.perf_counter()
            out = self.run_batch(model, buffer[:n], roles)
            elapsed = (time.perf_counter() - start) * 1e3
            yield from self._results(model, pending, out, options, k, batch_no, elapsed)
            batch_no += 1
            pending.clear()

        for source, window in windows:
            if window.samples.shape[0] != width:
                raise InferenceError(
                    f"window of {window.samples.shape[0]} samples; {model.identity} needs {width}"
                )
            buffer[len(pending)] = window.samples
            pending.append((source, window))
            if len(pending) == size:
                yield from flush()
        if pending:
            yield from flush()

    def _results(
        self,
        model: LoadedModel,
        pending: list[tuple[str, Window]],
        out: dict[OutputRole, np.ndarray],
        options: EmbedOptions,
        k: int,
        batch_no: int,
        elapsed_ms: float,
    ) -> Iterator[WindowResult]:
        n = len(pending)
        metas = [
            InferenceMeta(model.identity, model.provider, i, n, elapsed_ms / n) for i in range(n)
        ]
        yield from to_results(
            pending,
            out[OutputRole.EMBEDDING],
            out.get(OutputRole.LOGITS),
            out.get(OutputRole.SPECTROGRAM),
            metas,
            model.labels,
            k,
            options.include_logits,
            species_mask(model.labels, options.species),
        )

    # --- recordings -----------------------------------------------------------------------

    def embed_file(
        self,
        source: AudioSource,
        *,
        model: str | LoadedModel | None = None,
        options: EmbedOptions | None = None,
        stats: StreamStats | None = None,
        name: str | None = None,
    ) -> Iterator[WindowResult]:
        """Stream one recording through the whole chain; ``stats`` reports skipped windows."""
        loaded = model if isinstance(model, LoadedModel) else self.model(model)
        config = self.preprocess_config(loaded, options)
        label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
        windows = ((label, w) for w in prepare_windows(source, config, stats))
        ahead = prefetched(windows, self.settings.inference.prefetch_windows)
        yield from self.embed_windows(loaded, ahead, options)
