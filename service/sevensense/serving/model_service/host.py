"""What a model service does, without BentoML: host exact model versions and run batches of
windows on them.

A batch from the adaptive batcher mixes windows of many requests and possibly of two model
versions (stable and canary, or old and new during a hot swap). Windows are grouped by
version and each group runs as one ``session.run``; a group that fails (unknown version,
ORT error) fails only its own windows, never the requests it happened to share a batch with.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from sevensense.agile.served_head import HeadHost, HeadRef
from sevensense.artifacts.manifest import ModelIdentity, OutputRole
from sevensense.artifacts.registry import ModelRef
from sevensense.errors import SevensenseError
from sevensense.inference.engine import EmbeddingEngine
from sevensense.inference.gpu_driver import probe_driver
from sevensense.inference.sessions import LoadedModel
from sevensense.serving.model_service.rpc import (
    ModelServiceStatus,
    PathName,
    PrepareResult,
    WindowItem,
    WindowOutput,
    from_bytes,
    to_bytes,
)
from sevensense.serving.telemetry import tracing
from sevensense.serving.telemetry.metrics import metrics
from sevensense.settings import Settings, cpu_layout

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"


def path_settings(settings: Settings, path: PathName) -> Settings:
    """The CPU service pins the CPU provider; the GPU service keeps the profile's chain; the
    verifier runs BirdNET's base variant on its own provider and threads."""
    if path == "gpu":
        return settings
    if path == "verifier":
        v = settings.verification
        inference = settings.inference.model_copy(
            update={
                "providers": ["cuda", "cpu"] if v.provider == "gpu" else ["cpu"],
                "intra_threads": v.intra_threads,
                "max_batch_size": v.max_batch_size,
                "model_variant": "base",
            }
        )
        return settings.model_copy(update={"inference": inference})
    _, threads = cpu_layout(settings.serving)
    inference = settings.inference.model_copy(
        update={"providers": ["cpu"], "intra_threads": threads}
    )
    return settings.model_copy(update={"inference": inference})


@dataclass(frozen=True)
class ItemsRun:
    outputs: list[WindowOutput]
    compute_ms: float
    start_ns: int
    end_ns: int


def run_items(
    engine: EmbeddingEngine,
    model: LoadedModel,
    items: list[WindowItem],
    *,
    heads: HeadHost | None = None,
    batch_size: int | None = None,
    started: float | None = None,
) -> ItemsRun:
    """Prepared windows of one version as one ``session.run``; each item gets back what it
    asked for (logits, spectrogram). The model services and the gateway's in-process
    quantized fallback both run windows through here, so they answer alike.

    ``batch_size`` is the whole batch the items came in (for the metrics); ``started`` is
    when it began, to tell each item how long it queued. Items naming a classifier head get
    its logits, run on this batch's embeddings by ``heads`` (one call per head)."""
    width = model.manifest.window_samples
    batch = np.stack([from_bytes(it.samples) for it in items])
    if batch.shape[1] != width:
        raise SevensenseError(
            f"windows of {batch.shape[1]} samples; {model.identity} needs {width}"
        )
    roles = [OutputRole.EMBEDDING]
    if any(it.logits for it in items):
        roles.append(OutputRole.LOGITS)
    if any(it.spectrogram for it in items):
        roles.append(OutputRole.SPECTROGRAM)
    start_ns = tracing.now_ns()
    tick = time.perf_counter()
    out = engine.run_batch(model, batch, roles)
    compute_ms = (time.perf_counter() - tick) * 1e3
    end_ns = tracing.now_ns()
    logits = out.get(OutputRole.LOGITS)
    spectro = out.get(OutputRole.SPECTROGRAM)
    custom = _run_heads(heads, model, items, out[OutputRole.EMBEDDING])
    outputs = [
        WindowOutput(
            model=model.identity,
            provider=model.provider,
            embedding=to_bytes(out[OutputRole.EMBEDDING][row]),
            logits=to_bytes(logits[row]) if logits is not None and it.logits else None,
            spectrogram=to_bytes(spectro[row]) if spectro is not None and it.spectrogram else None,
            batch_size=batch_size or len(items),
            queue_ms=max(0.0, (started - it.sent_at) * 1e3) if started and it.sent_at else 0.0,
            compute_ms=compute_ms,
            **custom.get(row, {}),
        )
        for row, it in enumerate(items)
    ]
    return ItemsRun(outputs, compute_ms, start_ns, end_ns)


def _run_heads(
    heads: HeadHost | None, model: LoadedModel, items: list[WindowItem], embeddings: np.ndarray
) -> dict[int, dict[str, Any]]:
    """Per row, the WindowOutput fields of its head: logits and time, or a typed error that
    leaves the embedding standing (the gateway turns it into the request's 404/409)."""
    groups: dict[HeadRef, list[int]] = {}
    for row, it in enumerate(items):
        if it.head is not None:
            groups.setdefault(it.head, []).append(row)
    fields: dict[int, dict[str, Any]] = {}
    for ref, rows in groups.items():
        tick = time.perf_counter()
        try:
            if heads is None:
                raise SevensenseError("this model host runs no classifier heads")
            logits, live = heads.bound(ref, model.artifact).logits(embeddings[rows])
        except SevensenseError as exc:
            failed = {"head_error": exc.to_dict()}
            fields.update({row: failed for row in rows})
            continue
        head_ms = (time.perf_counter() - tick) * 1e3
        for i, row in enumerate(rows):
            fields[row] = {
                "custom": to_bytes(logits[i]) if live[i] else None,
                "head_ms": head_ms,
            }
    return fields


class ModelHost:
    def __init__(self, path: PathName, settings: Settings) -> None:
        self.path: PathName = path
        self.settings = path_settings(settings, path)
        self.engine = EmbeddingEngine(self.settings)
        self.heads = HeadHost(self.settings)
        self._recent: OrderedDict[tuple[str, str, str], float] = OrderedDict()
        self._lock = threading.Lock()
        self.reason: str | None = "starting"
        self.driver: str | None = None

    # --- readiness --------------------------------------------------------------------------

    def cuda_missing(self) -> str | None:
        if self.path != "gpu" or not self.settings.serving.gpu_require_cuda:
            return None
        if CUDA not in ort.get_available_providers():
            return "this onnxruntime build has no CUDAExecutionProvider"
        driver = probe_driver()
        if driver.driver_version:
            self.driver = f"{driver.driver_version} (CUDA {driver.cuda_version or '?'})"
        log.info(
            "gpu model service: NVIDIA driver %s, CUDA up to %s (onnxruntime-gpu needs %s)",
            driver.driver_version or "none",
            driver.cuda_version or "-",
            driver.required_cuda,
        )
        return driver.reason

    def start(self, refs: list[str]) -> None:
        """Load and warm the default and every rolled-out version before declaring ready."""
        missing = self.cuda_missing()
        if missing:
            self.reason = missing
            log.warning("%s model service not ready: %s", self.path, missing)
            return
        errors: list[str] = []
        for ref in dict.fromkeys(refs):
            try:
                self.prepare(ref)
            except SevensenseError as exc:
                log.warning("%s: could not load %s at start-up: %s", self.path, ref, exc)
                errors.append(exc.message)
        if not self.engine.sessions.loaded():
            self.reason = errors[0] if errors else "no model to load"
            return
        self.reason = None

    @property
    def ready(self) -> bool:
        return self.reason is None

    def status(self) -> ModelServiceStatus:
        loaded = self.engine.sessions.loaded()
        return ModelServiceStatus(
            path=self.path,
            ready=self.ready,
            reason=self.reason,
            provider=loaded[0].provider if loaded else None,
            loaded=[str(m.identity) for m in loaded],
            driver=self.driver,
        )

    # --- models -----------------------------------------------------------------------------

    def _model(self, ref: str) -> LoadedModel:
        loaded = self.engine.model(ref)
        if (
            self.path == "gpu"
            and self.settings.serving.gpu_require_cuda
            and loaded.provider != CUDA
        ):
            self.engine.sessions.evict(loaded.artifact.key)
            raise SevensenseError(
                f"{loaded.identity} did not load on CUDA (ONNX Runtime chose {loaded.provider}; "
                "no usable GPU?)"
            )
        with self._lock:
            self._recent[loaded.artifact.key] = time.monotonic()
            self._recent.move_to_end(loaded.artifact.key)
        return loaded

    def prepare(self, ref: str) -> PrepareResult:
        """Verify, load and warm one version (hot swap and canary call this first)."""
        m = metrics()
        try:
            loaded = self._model(ref)
            start = time.perf_counter()
            warm = np.zeros((1, loaded.manifest.window_samples), dtype=np.float32)
            self.engine.run_batch(loaded, warm, loaded.output_names)
            warm_ms = (time.perf_counter() - start) * 1e3
        except SevensenseError:
            m.model_loads.labels(self.path, *_name_version(ref), "failed").inc()
            raise
        ident = loaded.identity
        m.model_loads.labels(self.path, ident.name, ident.version, "loaded").inc()
        self._evict_beyond_limit(ident.name)
        return PrepareResult(
            ref=ref, model=ident, provider=loaded.provider, load_ms=loaded.load_ms, warm_ms=warm_ms
        )

    def _evict_beyond_limit(self, name: str) -> None:
        keep = self.settings.serving.max_loaded_versions
        with self._lock:
            same = [k for k in self._recent if k[0] == name]
            stale = same[: max(0, len(same) - keep)]
            for key in stale:
                del self._recent[key]
        for key in stale:
            # A batch still running on it holds its own reference; it finishes normally.
            self.engine.sessions.evict(key)
            log.info("%s: unloaded %s (least recently used)", self.path, ":".join(key))

    # --- batches ----------------------------------------------------------------------------

    def infer(self, items: list[WindowItem]) -> list[WindowOutput]:
        started = time.time()
        outputs: list[WindowOutput | None] = [None] * len(items)
        groups: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(item.model, []).append(i)
        for ref, indices in groups.items():
            for i, out in zip(indices, self._run_group(ref, items, indices, started), strict=True):
                outputs[i] = out
        return [o for o in outputs if o is not None]

    def _run_group(
        self, ref: str, items: list[WindowItem], indices: list[int], started: float
    ) -> list[WindowOutput]:
        m = metrics()
        group = [items[i] for i in indices]
        try:
            model = self._model(ref)
            run = run_items(
                self.engine, model, group, heads=self.heads, batch_size=len(items), started=started
            )
        except Exception as exc:  # isolate: only this group's windows fail
            name, version = _name_version(ref)
            m.model_windows.labels(self.path, name, version, "-", "failed").inc(len(group))
            message = exc.message if isinstance(exc, SevensenseError) else str(exc)
            log.warning(
                "%s: group of %d windows for %s failed: %s", self.path, len(group), ref, message
            )
            return [_failed(ref, message) for _ in group]
        ident = model.identity
        labels = (self.path, ident.name, ident.version, model.provider)
        m.batch_size.labels(*labels).observe(len(items))
        m.compute_time.labels(*labels).observe(run.compute_ms / 1e3)
        m.model_windows.labels(*labels, "ok").inc(len(group))
        for it, out in zip(group, run.outputs, strict=True):
            if it.head is not None:
                outcome = "failed" if out.head_error else "ok"
                m.head_windows.labels(self.path, it.head.ref, outcome).inc()
        seen: set[str] = set()
        for it, out in zip(group, run.outputs, strict=True):
            m.queue_time.labels(*labels).observe(out.queue_ms / 1e3)
            parent = it.trace.get("traceparent", "")
            if parent and parent not in seen:
                seen.add(parent)
                tracing.timed_span(
                    "queue",
                    run.start_ns - int(out.queue_ms * 1e6),
                    run.start_ns,
                    it.trace,
                    path=self.path,
                )
                tracing.timed_span(
                    "infer",
                    run.start_ns,
                    run.end_ns,
                    it.trace,
                    path=self.path,
                    model=str(ident),
                    provider=model.provider,
                    batch_size=len(items),
                )
        return run.outputs


def _failed(ref: str, message: str) -> WindowOutput:
    name, version = _name_version(ref)
    return WindowOutput(
        model=ModelIdentity(name=name, version=version, variant="-"),
        provider="-",
        embedding=b"",
        batch_size=0,
        queue_ms=0.0,
        compute_ms=0.0,
        error=message,
    )


def _name_version(ref: str) -> tuple[str, str]:
    """For metric labels of a ref that may not even parse (that is why it failed)."""
    try:
        parsed = ModelRef.parse(ref)
    except SevensenseError:
        return ref, "-"
    return parsed.name, parsed.version or "-"
