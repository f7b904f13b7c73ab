"""The worker's side of a deferred request: embed the stored upload, store the answer.

:mod:`sevensense.jobs` says what a deferred request is (records, job store, how the
gateway submits one); this module is what a worker process runs for each such message.

The answer is the same ``EmbedResponse`` the synchronous endpoint returns, computed by the
same engine with the model version and options the gateway resolved, so a client cannot
tell (apart from ``route: worker``) which path served it. Idempotent: a redelivered message
for a finished job does nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

from sevensense.agile.apply import with_custom
from sevensense.audio.decode import NamedSource
from sevensense.audio.pipeline import StreamStats
from sevensense.embeddings.choices import DEFAULT_MAX_NORM
from sevensense.embeddings.quality import process_monitors
from sevensense.errors import AudioError, SevensenseError
from sevensense.index.base import VectorIndex
from sevensense.index.ingest import add_results
from sevensense.index.store import open_index
from sevensense.inference.engine import EmbeddingEngine, EmbedOptions
from sevensense.jobs.records import (
    AGILE_KIND,
    KIND,
    DeferredRequest,
    IndexTarget,
    JobRecord,
    JobStatus,
    now,
)
from sevensense.jobs.store import JobStore
from sevensense.outputs.response import WORKER, EmbedOutcome, EmbedResponse, Timing, to_response
from sevensense.planning.answers import JSON_MEDIA_TYPE, detect_answer
from sevensense.planning.options import RequestOptions
from sevensense.planning.plan import Planner
from sevensense.queues.base import Message
from sevensense.storage.objects import open_store
from sevensense.verification.deferred import verify_results
from sevensense.worker.agile_jobs import AgileHandler
from sevensense.worker.base import CancelledError, Handler, HandlerResult, Heartbeat, WorkerContext

log = logging.getLogger(__name__)


@dataclass
class Answer:
    """A job's stored result and what ``GET /jobs/{id}`` needs to return it."""

    body: str
    media_type: str
    kind: Literal["embed", "detect"]
    windows: int
    duration_s: float


class DeferredHandler:
    def __init__(self, engine: EmbeddingEngine, jobs: JobStore, max_receives: int) -> None:
        self.engine = engine
        self.jobs = jobs
        self.max_receives = max_receives
        self.planner = Planner(engine.settings, engine.registry)
        self._index: VectorIndex | None = None

    def __call__(self, message: Message, heartbeat: Heartbeat | None = None) -> HandlerResult:
        request = DeferredRequest.model_validate_json(message.body)
        record = self.jobs.start(request.job_id)
        if record is None:
            log.info("job %s has ended already; redelivery ignored", request.job_id)
            return HandlerResult("exists", detail=request.job_id)
        try:
            answer = self.answer(request, heartbeat)
        except CancelledError:  # shutdown: the message goes back, the job waits for it
            record.status = JobStatus.QUEUED
            self.jobs.save(record)
            raise
        except AudioError as exc:
            # The same bytes will not decode next time either: fail the job, not the message.
            return self._finish_failed(record, exc.to_dict())
        except Exception as exc:
            error = (
                exc.to_dict()
                if isinstance(exc, SevensenseError)
                else {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
            )
            last = message.receive_count >= self.max_receives
            record.status = JobStatus.FAILED if last else JobStatus.QUEUED
            record.error = error
            record.finished_at = now() if last else None
            self.jobs.save(record)
            raise
        body = answer.body.encode()
        key = self.jobs.put_result(record.job_id, body)
        record.status = JobStatus.DONE
        record.finished_at = now()
        record.result_key = key
        record.result_location = self.jobs.location(key)
        record.result_bytes = len(body)
        record.result_kind = answer.kind
        record.result_media_type = answer.media_type
        record.windows = answer.windows
        record.error = None
        self.jobs.save(record)
        self.jobs.delete_payload(record.job_id)
        log.info("job %s done: %d windows", record.job_id, record.windows)
        return HandlerResult("done", answer.duration_s, answer.windows, record.job_id)

    def _finish_failed(self, record: JobRecord, error: dict[str, Any]) -> HandlerResult:
        record.status = JobStatus.FAILED
        record.error = error
        record.finished_at = now()
        self.jobs.save(record)
        log.warning("job %s failed for good: %s", record.job_id, error.get("message"))
        return HandlerResult("failed", detail=f"{record.job_id}: {error.get('code')}")

    def compute(
        self, request: DeferredRequest, heartbeat: Heartbeat | None = None
    ) -> EmbedResponse:
        """The embeddings answer (whatever the request asked for)."""
        return to_response(self.outcome(request, heartbeat), request.job_id)

    def answer(self, request: DeferredRequest, heartbeat: Heartbeat | None = None) -> Answer:
        """What the live route would have answered: detections for a deferred ``/detect``
        (JSON or the BirdNET-Analyzer file it asked for), else the embeddings."""
        outcome = self.outcome(request, heartbeat)
        windows, duration_s = len(outcome.results), outcome.stats.duration_s
        if request.detect is None:
            body = to_response(outcome, request.job_id).model_dump_json(exclude_none=True)
            return Answer(body, JSON_MEDIA_TYPE, "embed", windows, duration_s)
        detect = request.detect
        found = detect_answer(
            self.planner,
            outcome,
            detect.request_options(),
            detect.format,
            detect.name,
            request.job_id,
        )
        return Answer(found.body, found.media_type, "detect", windows, duration_s)

    def outcome(self, request: DeferredRequest, heartbeat: Heartbeat | None = None) -> EmbedOutcome:
        started = time.perf_counter()
        asked_options = EmbedOptions(**request.options)
        # verify=true compares the model's scores with BirdNET's: the logits are needed
        options = dataclasses.replace(
            asked_options, include_logits=asked_options.include_logits or request.verify
        )
        model = self.engine.model(request.model)
        config = self.engine.preprocess_config(model, options)
        stats = StreamStats()
        results = []
        with self.jobs.open_payload(request.job_id) as payload:
            for result in self.engine.embed_file(
                NamedSource(payload, request.filename),
                model=model,
                options=options,
                stats=stats,
                name="upload",
            ):
                results.append(process_monitors(self.engine.settings.quality).observe_one(result))
                if heartbeat is not None:
                    heartbeat.progress(result.end_s)
                    heartbeat.check()
        manifest = model.manifest
        window_s = manifest.window_samples / manifest.sample_rate
        verification, window_checks = None, None
        if request.verify:
            with self.jobs.open_payload(request.job_id) as payload:
                verification, window_checks = verify_results(
                    self.engine,
                    model.artifact,
                    NamedSource(payload, request.filename),
                    results,
                    window_s,
                    options.max_duration_s,
                )
            if not asked_options.include_logits:
                results = [dataclasses.replace(r, logits=None) for r in results]
        asked = request.transform
        transform = self.planner.transform(
            model.artifact,
            RequestOptions(
                reduce=asked.get("reduce"),
                project=asked.get("project"),
                curvature=float(asked.get("curvature", 1.0)),
                max_norm=float(asked.get("max_norm", DEFAULT_MAX_NORM)),
            ),
        )
        # The worker is its own model host: the head runs here, on the transformed windows,
        # after the planner re-checked the classifier's owner, digest and space.
        classifier = self.planner.classifier(
            model.artifact,
            transform,
            RequestOptions(classifier=request.classifier, tenant=request.classifier_tenant),
        )
        results = with_custom(classifier, transform.apply_results(results))
        species = (
            self.planner.species_filter(model.artifact, request.detect.request_options())
            if request.detect is not None
            else None
        )
        outcome = EmbedOutcome(
            artifact=model.artifact,
            results=results,
            stats=stats,
            route=WORKER,
            providers=[model.provider],
            fallback=False,
            window_s=window_s,
            hop_s=window_s * (1.0 - config.overlap),
            resampler=config.resample_quality,
            routing_key_hash=hashlib.sha256(request.job_id.encode()).hexdigest()[:12],
            timing=Timing.of(
                stats,
                total_s=time.perf_counter() - started,
                infer_ms=sum(r.meta.inference_ms for r in results),
            ),
            served=[WORKER] * len(results),
            transform=transform,
            species_filter=species.summary() if species else None,
            species=species.species if species else None,
            classifier=classifier.ref if classifier else None,
            verification=verification,
            window_verification=window_checks,
        )
        if request.index is not None:
            self.index_windows(request.index, outcome)
        return outcome

    def index_windows(self, target: IndexTarget, outcome: EmbedOutcome) -> int:
        """Before the job is marked done: an index that fails leaves the job queued for
        another try, and adds are idempotent, so a retry or redelivery adds nothing twice."""
        if self._index is None:
            self._index = open_index(self.engine.settings)
        added = add_results(
            self._index,
            outcome.artifact.manifest,
            outcome.transform,
            outcome.hop_s,
            outcome.results,
            tenant=target.tenant,
            recording_id=target.recording_id,
            site=target.site,
            time=target.recorded_at,
        )
        log.info("indexed %d windows of %s for %s", added, target.recording_id, target.tenant)
        return added


def deferred_handlers(context: WorkerContext) -> dict[str, Handler]:
    """The handlers a worker registers for the deferred queue: requests and agile jobs."""
    jobs = JobStore(open_store(context.settings.payload_uri()))
    handler = DeferredHandler(context.engine, jobs, context.settings.queue.max_receives)
    return {KIND: handler, AGILE_KIND: AgileHandler(context.settings, jobs)}
