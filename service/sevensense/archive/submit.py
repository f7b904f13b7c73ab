"""Enqueue an archive for the batch worker: what is done is skipped, the rest is sent.

S3 events fire for new objects only; a recording archive that was uploaded before the
notifications existed reaches the worker through here. Each audio object becomes an S3
``ObjectCreated`` record (size and ETag included, as S3 sends them) on the batch queue, so
the worker treats it exactly as an event: same handler, same output key, same retries and
dead-letter queue.

Idempotent with the worker's done records: the output key of an object is a function of its
key, ETag, the model and the transform (:mod:`sevensense.archive.naming`), so a page of
objects is checked against the outputs by one listing of the output key range the page
maps to (not one HEAD per object), and what already has its output is counted, not sent.
A re-submit therefore enqueues only what is not done; an object enqueued twice (a submit
re-run before the worker finished) is still written once, as the worker checks the same key
and uploads with ``If-None-Match``.

Memory is bounded by one page (1,000 objects) and the output keys of its range (at most
``DONE_SCAN_LIMIT``, past which the page is checked by HEADs instead).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol
from urllib.parse import quote_plus

from pydantic import BaseModel, Field

from sevensense.archive.listing import (
    ArchiveObject,
    ArchiveSourceError,
    inventory_pages,
    list_prefix,
    parse_s3_uri,
)
from sevensense.archive.naming import OutputNaming, clean_etag, is_audio_key
from sevensense.errors import ConfigError, QueueError, StorageError
from sevensense.queues.sqlite import MAX_BODY_BYTES
from sevensense.settings import Settings

log = logging.getLogger(__name__)

EVENT_SOURCE = "sevensense:archive"
EVENT_NAME = "ObjectCreated:ArchiveSubmit"
MAX_PER_MESSAGE = 100
SQS_BATCH = 10
DONE_SCAN_LIMIT = 20_000
FAILURES_KEPT = 1000
_MB = 1024 * 1024


class BatchSender(Protocol):
    def send_batch(self, bodies: list[str]) -> list[tuple[int, str, str]]: ...


class Failure(BaseModel):
    key: str
    code: str
    reason: str


class SubmitReport(BaseModel):
    """Progress while it runs (``finished`` false), the final report once it is over."""

    source: str
    finished: bool = False
    listed: int = Field(0, description="objects seen under the prefix")
    enqueued: int = Field(0, description="objects sent to the batch queue")
    messages: int = 0
    already_done: int = Field(0, description="skipped: the worker's output exists")
    skipped: dict[str, int] = Field(
        default_factory=dict, description="skipped for another reason (non_audio, ...)"
    )
    failed: int = Field(0, description="not enqueued; reasons in failures")
    failures: list[Failure] = Field(default_factory=list)
    failures_truncated: int = 0
    dry_run: bool = False
    elapsed_s: float = 0.0

    def fail(self, key: str, code: str, reason: str) -> None:
        self.failed += 1
        if len(self.failures) < FAILURES_KEPT:
            self.failures.append(Failure(key=key, code=code, reason=reason))
        else:
            self.failures_truncated += 1

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + count


def event_record(obj: ArchiveObject) -> dict[str, Any]:
    """The record S3 would have sent for the object (key URL-encoded in the form style)."""
    return {
        "eventVersion": "2.1",
        "eventSource": EVENT_SOURCE,
        "eventName": EVENT_NAME,
        "s3": {
            "bucket": {"name": obj.bucket},
            "object": {"key": quote_plus(obj.key, safe="/"), "size": obj.size, "eTag": obj.etag},
        },
    }


def message_groups(objects: list[ArchiveObject], per_message: int) -> Iterator[list[ArchiveObject]]:
    for start in range(0, len(objects), per_message):
        yield objects[start : start + per_message]


def pack(
    groups: list[tuple[list[ArchiveObject], str]],
) -> Iterator[list[tuple[list[ArchiveObject], str]]]:
    """SendMessageBatch calls: at most 10 messages and 256 KiB each."""
    batch: list[tuple[list[ArchiveObject], str]] = []
    size = 0
    for group, body in groups:
        n = len(body.encode())
        if batch and (len(batch) == SQS_BATCH or size + n > MAX_BODY_BYTES):
            yield batch
            batch, size = [], 0
        batch.append((group, body))
        size += n
    if batch:
        yield batch


class DoneRecords:
    """Which objects of a page already have the worker's output."""

    def __init__(self, s3: Any, bucket: str, naming: OutputNaming) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.naming = naming

    def done(self, page: list[ArchiveObject]) -> set[str]:
        """Input keys of ``page`` whose output exists."""
        wanted = {self.naming.key(o.key, clean_etag(o.etag)): o.key for o in page}
        stems = sorted(self.naming.stem(o.key) for o in page)
        found = self._range(stems[0], stems[-1] + "/")  # "/" sorts right after "."
        if found is None:
            return {key for out, key in wanted.items() if self._exists(out)}
        return {wanted[k] for k in found if k in wanted}

    def _range(self, first: str, stop: str) -> set[str] | None:
        """Output keys in (first, stop), or None past DONE_SCAN_LIMIT keys."""
        from botocore.exceptions import BotoCoreError, ClientError

        found: set[str] = set()
        request: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self.naming.output_prefix,
            "StartAfter": first,
        }
        while True:
            try:
                response = self.s3.list_objects_v2(**request)
            except (BotoCoreError, ClientError) as exc:
                raise StorageError(f"LIST s3://{self.bucket}/{first}… failed: {exc}") from exc
            for item in response.get("Contents", []):
                key = str(item["Key"])
                if key >= stop:
                    return found
                found.add(key)
            if len(found) > DONE_SCAN_LIMIT:
                return None
            token = response.get("NextContinuationToken")
            if not response.get("IsTruncated") or not token:
                return found
            request["ContinuationToken"] = token

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise StorageError(f"HEAD s3://{self.bucket}/{key} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"HEAD s3://{self.bucket}/{key} failed: {exc}") from exc


class ArchiveSubmitter:
    """One submission: pages in, messages out, one report."""

    def __init__(
        self,
        s3: Any,
        queue: BatchSender,
        naming: OutputNaming,
        output_bucket: str | None,
        *,
        max_object_mb: float,
        per_message: int = 1,
        senders: int = 4,
        dry_run: bool = False,
    ) -> None:
        if not 1 <= per_message <= MAX_PER_MESSAGE:
            raise ValueError(f"per_message must be 1 to {MAX_PER_MESSAGE}")
        self.s3 = s3
        self.queue = queue
        self.naming = naming
        self.output_bucket = output_bucket
        self.max_bytes = int(max_object_mb * _MB)
        self.max_object_mb = max_object_mb
        self.per_message = per_message
        self.senders = senders
        self.dry_run = dry_run

    def run(
        self,
        source: str,
        pages: Iterable[list[ArchiveObject]],
        on_progress: Callable[[SubmitReport], None] | None = None,
        report: SubmitReport | None = None,
    ) -> SubmitReport:
        report = report or SubmitReport(source=source, dry_run=self.dry_run)
        started = time.monotonic()
        with ThreadPoolExecutor(self.senders, thread_name_prefix="archive-send") as pool:
            for page in pages:
                self._page(page, report, pool)
                report.elapsed_s = round(time.monotonic() - started, 3)
                if on_progress is not None:
                    on_progress(report)
        report.finished = True
        report.elapsed_s = round(time.monotonic() - started, 3)
        log.info(
            "archive %s: %d listed, %d enqueued in %d messages, %d already done, "
            "skipped %s, %d failed (%.1f s)",
            source,
            report.listed,
            report.enqueued,
            report.messages,
            report.already_done,
            report.skipped,
            report.failed,
            report.elapsed_s,
        )
        return report

    def _page(
        self, page: list[ArchiveObject], report: SubmitReport, pool: ThreadPoolExecutor
    ) -> None:
        report.listed += len(page)
        audio: list[ArchiveObject] = []
        for obj in page:
            if not is_audio_key(obj.key):
                report.skip("non_audio")
            elif obj.size > self.max_bytes:
                report.fail(
                    obj.uri,
                    "object_too_large",
                    f"{obj.size / _MB:.1f} MB, over max_object_mb {self.max_object_mb:g}",
                )
            else:
                audio.append(obj)
        if not audio:
            return
        bucket = self.output_bucket or audio[0].bucket
        done = DoneRecords(self.s3, bucket, self.naming).done(audio)
        report.already_done += len(done)
        todo = [o for o in audio if o.key not in done]
        if self.dry_run:
            report.enqueued += len(todo)
            return
        groups = [
            (group, json.dumps({"Records": [event_record(o) for o in group]}))
            for group in message_groups(todo, self.per_message)
        ]
        batches = list(pack(groups))
        for batch, failed in zip(batches, pool.map(self._send, batches), strict=True):
            refused = {index: (code, reason) for index, code, reason in failed}
            for index, (group, _) in enumerate(batch):
                if index in refused:
                    code, reason = refused[index]
                    for obj in group:
                        report.fail(obj.uri, code, reason)
                else:
                    report.enqueued += len(group)
                    report.messages += 1

    def _send(self, batch: list[tuple[list[ArchiveObject], str]]) -> list[tuple[int, str, str]]:
        try:
            return self.queue.send_batch([body for _, body in batch])
        except QueueError as exc:
            return [(i, exc.code, exc.message) for i in range(len(batch))]


def submit_archive(
    settings: Settings,
    source: str,
    *,
    inventory: str | None = None,
    per_message: int = 1,
    dry_run: bool = False,
    s3: Any = None,
    queue: BatchSender | None = None,
    on_progress: Callable[[SubmitReport], None] | None = None,
    report: SubmitReport | None = None,
) -> SubmitReport:
    """Every audio object under ``source`` (``s3://bucket/prefix``) onto the batch queue,
    from a listing, or from the S3 Inventory whose ``manifest.json`` is ``inventory``."""
    from sevensense.queues.sqs import SqsQueue
    from sevensense.storage.objects import default_s3_client

    bucket, prefix = parse_s3_uri(source)
    worker = settings.worker
    if worker.input_bucket and worker.input_bucket != bucket:
        raise ArchiveSourceError(
            f"{source}: the worker takes events of bucket {worker.input_bucket!r} only "
            "(worker.input_bucket); it would ignore these"
        )
    if queue is None:
        if not worker.batch_queue_url:
            raise ConfigError("no batch queue: set SEVENSENSE_BATCH_QUEUE_URL")
        queue = SqsQueue(worker.batch_queue_url, default_max_receives=worker.max_receives)
    s3 = s3 if s3 is not None else default_s3_client()
    naming = OutputNaming.of(settings)
    submitter = ArchiveSubmitter(
        s3,
        queue,
        naming,
        worker.output_bucket,
        max_object_mb=worker.max_object_mb,
        per_message=per_message,
        dry_run=dry_run,
    )
    if inventory:
        pages = inventory_pages(s3, inventory, prefix)
        pages = ([o for o in page if o.bucket == bucket] for page in pages)
    else:
        pages = list_prefix(s3, bucket, prefix)
    return submitter.run(source, pages, on_progress, report)
