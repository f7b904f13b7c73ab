"""One S3 object in, one Parquet object out: the batch job behind an S3 event.

The output key (:mod:`sevensense.archive.naming`) is deterministic, so a redelivered event
finds its own earlier result: the same object under the same model always yields the same
key, which the job checks first and skips (idempotent); an overwritten object (new ETag) or
a new model version yields a new key and never overwrites an old one.

The object is streamed with ranged GETs pinned to its ETag (memory O(block), whatever the
recording's length) through the same engine, options and writer as ``sevensense embed``,
into a local temporary file; only a complete file is uploaded, with ``If-None-Match: *`` so
that two workers racing on one object leave exactly one result. A recording that fails to
decode part-way fails the job (nothing uploaded); the runner retries it and dead-letters it
after the queue's maximum receives.

Objects over ``max_object_mb`` are a permanent failure sent straight to the DLQ with code
``object_too_large``: no retry can shrink them, and an operator should see them rather than
have them vanish from a log. Objects whose name is not an audio file are skipped (the
message is deleted) with a log line. An object deleted before its event was processed
counts as done, and so does one replaced since (the replacement has its own event and
output key): both show up as the GETs, pinned to the event's ETag, fail, so the job needs
no HEAD of its input.
"""

from __future__ import annotations

import logging
import tempfile
import time
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, cast

from sevensense.archive.naming import clean_etag, is_audio_key, output_key, request_options
from sevensense.audio.decode import NamedSource
from sevensense.audio.quality_levels import describe_resampler
from sevensense.embeddings.quality import process_monitors
from sevensense.errors import ObjectNotFoundError, ObjectTooLargeError, StorageError
from sevensense.index.ingest import parquet_batches, space_info
from sevensense.index.store import open_index
from sevensense.inference.engine import EmbeddingEngine, WindowResult
from sevensense.inference.recordings import RecordingReport, embed_recordings
from sevensense.inference.sessions import LoadedModel
from sevensense.outputs.detections import (
    MEDIA_TYPES,
    SUFFIXES,
    DetectionCollector,
    render,
)
from sevensense.outputs.formats import DetectionFormat
from sevensense.outputs.writers import ParquetWriter
from sevensense.planning.plan import DetectionPlan, Planner
from sevensense.queues.base import Message
from sevensense.settings import WorkerSettings
from sevensense.storage.s3_stream import S3ObjectReader
from sevensense.worker.base import HandlerResult, Heartbeat, PermanentError, RecordingError
from sevensense.worker.events import S3ObjectEvent, parse_notification

log = logging.getLogger(__name__)

_MB = 1024 * 1024
PARQUET_TYPE = "application/vnd.apache.parquet"


class OversizedObjectError(ObjectTooLargeError, PermanentError):
    """Over ``max_object_mb``: no retry can help, so it goes to the DLQ at once."""


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _not_found(exc: Exception) -> bool:
    return _error_code(exc) in {"404", "NoSuchKey", "NotFound"}


class S3BatchHandler:
    """The handler for S3 event messages; one instance serves every worker thread."""

    def __init__(
        self,
        settings: WorkerSettings,
        engine: EmbeddingEngine,
        s3: Any,
        model_ref: str,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.s3 = s3
        self.model: LoadedModel = engine.model(model_ref)
        self.detections: DetectionFormat | None = settings.detections_format
        # Planned once per worker: a bad filter or reducer stops the worker at start, not
        # per message. The plan's defaults are the CLI's, so outputs equal the CLI's.
        planner = Planner(engine.settings, engine.registry)
        self.plan = planner.plan(self.model.artifact, request_options(settings))
        self.max_bytes = int(settings.max_object_mb * _MB)
        self.index = open_index(engine.settings, settings.index) if settings.index else None
        self.index_space = space_info(self.model.manifest, self.plan.transform)
        # Flags anomalous_norm per window; the report goes into the worker's run summary.
        self.monitors = process_monitors(engine.settings.quality)

    def __call__(self, message: Message, heartbeat: Heartbeat) -> HandlerResult:
        notification = parse_notification(message.body)
        if notification.test_event:
            log.info(
                "s3:TestEvent from bucket %s acknowledged (message %s)",
                notification.bucket,
                message.id,
            )
            return HandlerResult("test_event")
        results = [self.process(event, heartbeat) for event in notification.records]
        if not results:
            return HandlerResult("ignored", detail="no records")
        outcomes = sorted({r.outcome for r in results})
        return HandlerResult(
            outcomes[0] if len(outcomes) == 1 else "mixed",
            audio_s=sum(r.audio_s for r in results),
            windows=sum(r.windows for r in results),
            detail="; ".join(r.detail for r in results if r.detail),
        )

    # --- one object -------------------------------------------------------------------------

    def process(self, event: S3ObjectEvent, heartbeat: Heartbeat) -> HandlerResult:
        if not event.created:
            log.info(
                "ignored %s event for %s (only ObjectCreated is processed)",
                event.event_name,
                event.uri,
            )
            return HandlerResult("ignored", detail=event.event_name)
        wanted = self.settings.input_bucket
        if wanted and event.bucket != wanted:
            log.warning("ignored event for %s: not the input bucket %s", event.uri, wanted)
            return HandlerResult("ignored", detail="other bucket")
        if not is_audio_key(event.key):
            suffix = PurePosixPath(event.key).suffix or "(none)"
            log.info("skipped non-audio object %s (suffix %s)", event.uri, suffix)
            return HandlerResult("skipped", detail=f"non-audio {event.uri}")
        # The event names the object's size and ETag: no HEAD needed. The ranged GETs are
        # pinned to that ETag, so a deleted or replaced object shows up when it is read.
        size, etag = event.size, event.etag
        if size is None or etag is None:
            head = self._head(event.bucket, event.key)
            if head is None:
                return self._missing(event)
            size, etag = int(head["ContentLength"]), str(head["ETag"])
        if size > self.max_bytes:
            raise OversizedObjectError(
                f"{event.uri} is {size / _MB:.1f} MB, over max_object_mb "
                f"{self.settings.max_object_mb:g}",
                size_bytes=size,
            )
        etag = clean_etag(etag)
        out_bucket = self.settings.output_bucket or event.bucket
        out_key = output_key(
            event.key,
            self.settings.input_prefix,
            self.settings.output_prefix,
            self.model.identity,
            etag,
            self.plan.transform.space_key,
        )
        out_uri = f"s3://{out_bucket}/{out_key}"
        if self._head(out_bucket, out_key) is not None:
            log.info(
                "output %s already exists; skipping %s (already processed)", out_uri, event.uri
            )
            return HandlerResult("exists", detail=out_uri)
        return self._embed(event, size, etag, out_bucket, out_key, heartbeat)

    def _missing(self, event: S3ObjectEvent) -> HandlerResult:
        log.info("object %s no longer exists (deleted before processing); nothing to do", event.uri)
        return HandlerResult("missing", detail=event.uri)

    def _unreadable(self, event: S3ObjectEvent, etag: str, exc: StorageError) -> HandlerResult:
        """A GET failed: gone and replaced objects are done (a replacement has its own
        event, and its own output key); anything else is retried."""
        if isinstance(exc, ObjectNotFoundError):
            return self._missing(event)
        head = self._head(event.bucket, event.key)
        if head is None:
            return self._missing(event)
        now = clean_etag(str(head["ETag"]))
        if now != etag:
            log.info(
                "object %s was replaced since its event (ETag %s, now %s); the new version's "
                "own event processes it",
                event.uri,
                etag,
                now,
            )
            return HandlerResult("superseded", detail=event.uri)
        raise exc

    def _head(self, bucket: str, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return cast(dict[str, Any], self.s3.head_object(Bucket=bucket, Key=key))
        except ClientError as exc:
            if _not_found(exc):
                return None
            raise StorageError(f"HEAD s3://{bucket}/{key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"HEAD s3://{bucket}/{key} failed: {exc}") from exc

    def _embed(
        self,
        event: S3ObjectEvent,
        size: int,
        etag: str,
        out_bucket: str,
        out_key: str,
        heartbeat: Heartbeat,
    ) -> HandlerResult:
        model = self.model
        started = time.perf_counter()
        log.info(
            "processing %s (%.1f MB) -> s3://%s/%s", event.uri, size / _MB, out_bucket, out_key
        )

        collector = self._collector()

        def on_window(result: WindowResult) -> None:
            if collector is not None:
                collector.add(result)
            heartbeat.progress(result.end_s)
            heartbeat.check()

        with tempfile.TemporaryDirectory(prefix="sevensense-job-") as tmp:
            path = Path(tmp) / "out.parquet"
            writer = ParquetWriter(path, self.plan.out_dim, constants=self.plan.transform.columns())
            try:
                with S3ObjectReader(
                    self.s3, event.bucket, event.key, size=size, etag=etag
                ) as reader:
                    summary = embed_recordings(
                        self.engine,
                        [NamedSource(cast(BinaryIO, reader), event.key)],
                        lambda r: writer.write(
                            self.plan.transform.apply_result(self.monitors.observe_one(r))
                        ),
                        model=model,
                        options=self.plan.options,
                        names=[event.uri],
                        on_window=on_window,
                    )
                    # libsndfile takes a failed GET for the end of the file: a short decode,
                    # not an error, unless asked.
                    reader.raise_for_error()
            except StorageError as exc:
                return self._unreadable(event, etag, exc)
            report = summary.recordings[0]
            if report.status != "ok":
                error = report.error or {}
                raise RecordingError(
                    str(error.get("code", "undecodable_audio")),
                    f"{event.uri}: {report.status} after {report.windows} windows: "
                    f"{error.get('message', 'decode failed')}",
                )
            heartbeat.check()
            record = summary.to_dict()
            record.pop("wall_s", None)  # keeps a re-run's file byte-identical
            record["input"] = {"bucket": event.bucket, "key": event.key, "etag": etag, "size": size}
            if self.plan.species is not None:
                record["species_filter"] = self.plan.species.summary()
            if not self.plan.transform.is_identity:
                record["transform"] = self.plan.transform.describe()
            record["resampler"] = describe_resampler(self.plan.resampler)
            writer.close(record)
            if self.index is not None:  # from the finished file: bounded memory, all or nothing
                for batch in parquet_batches(
                    path, self.settings.index_tenant, recording_id=event.uri
                ):
                    self.index.add(self.index_space, batch)
                    heartbeat.check()
            wall = time.perf_counter() - started
            metadata = {
                "source-bucket": event.bucket,
                "source-key": urllib.parse.quote(event.key, safe="/"),
                "source-etag": clean_etag(etag),
                "model": str(model.identity),
                "provider": model.provider,
                "windows": str(summary.windows),
                "audio-seconds": f"{summary.audio_s:.3f}",
                "processing-seconds": f"{wall:.3f}",
                "resampler": self.plan.resampler,
            }
            if collector is not None:  # before the Parquet file, whose key marks "done"
                self._put_detections(collector, event, report, out_bucket, out_key, metadata)
            uploaded = self._upload(path, out_bucket, out_key, metadata)
        uri = f"s3://{out_bucket}/{out_key}"
        if not uploaded:
            log.info("output %s was written meanwhile by another worker; kept that one", uri)
            return HandlerResult("exists", summary.audio_s, summary.windows, uri)
        factor = summary.audio_s / wall if wall > 0 else 0.0
        log.info(
            "wrote %s: %d windows, %.1f s audio in %.2f s (%.1fx real time)",
            uri,
            summary.windows,
            summary.audio_s,
            wall,
            factor,
        )
        return HandlerResult("done", summary.audio_s, summary.windows, uri)

    def _collector(self) -> DetectionCollector | None:
        detections = self.plan.detections
        return detections.collector() if detections is not None else None

    def _put_detections(
        self,
        collector: DetectionCollector,
        event: S3ObjectEvent,
        report: RecordingReport,
        bucket: str,
        parquet_key: str,
        metadata: dict[str, str],
    ) -> None:
        """A recording's BirdNET-Analyzer file, keyed like its Parquet output; rewritten
        whole by a retry, so at-least-once delivery leaves one correct file."""
        from botocore.exceptions import BotoCoreError, ClientError

        fmt = cast(DetectionFormat, self.detections)
        rate = report.sample_rate or self.model.manifest.sample_rate
        rec = collector.recording(event.uri, report.duration_s, rate)
        codes = cast(DetectionPlan, self.plan.detections).codes
        body = render(fmt, [rec], codes=codes, params=self.plan.analysis()).encode("utf-8")
        key = parquet_key.removesuffix(".parquet") + SUFFIXES[fmt]
        try:
            self.s3.put_object(
                Bucket=bucket, Key=key, Body=body, ContentType=MEDIA_TYPES[fmt], Metadata=metadata
            )
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"PUT s3://{bucket}/{key} failed: {exc}") from exc

    def _upload(self, path: Path, bucket: str, key: str, metadata: dict[str, str]) -> bool:
        """False when the key already exists (a concurrent duplicate won the race)."""
        from botocore.exceptions import BotoCoreError, ClientError

        extra: dict[str, Any] = {"IfNoneMatch": "*"}
        for _ in range(2):
            try:
                with path.open("rb") as body:
                    self.s3.put_object(
                        Bucket=bucket,
                        Key=key,
                        Body=body,
                        ContentType=PARQUET_TYPE,
                        Metadata=metadata,
                        **extra,
                    )
                return True
            except ClientError as exc:
                code = _error_code(exc)
                if code in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
                    return False
                if code == "NotImplemented" and extra:
                    extra = {}  # an S3-compatible store without conditional writes
                    continue
                raise StorageError(f"PUT s3://{bucket}/{key} failed: {exc}") from exc
            except BotoCoreError as exc:
                raise StorageError(f"PUT s3://{bucket}/{key} failed: {exc}") from exc
        return True
