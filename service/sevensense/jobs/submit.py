"""Accepting a request for later: payload first, then the record, then the message.

That order means a message never points at nothing; if any step fails the client gets an
error (503) instead of a job id, so an accepted request is never lost. A payload or record
left behind by a failed enqueue is garbage the store's lifecycle rule expires.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from typing import Any, BinaryIO

from sevensense.errors import QueueError, SevensenseError
from sevensense.inference.engine import EmbedOptions
from sevensense.jobs.records import (
    AgileJob,
    DeferredRequest,
    DetectRequest,
    IndexTarget,
    JobRecord,
    JobStatus,
    new_job_id,
    now,
)
from sevensense.jobs.store import JobStore
from sevensense.queues.base import MessageQueue

log = logging.getLogger(__name__)


class Deferrer:
    def __init__(self, jobs: JobStore, queue: MessageQueue) -> None:
        self.jobs = jobs
        self.queue = queue

    def submit(
        self,
        source: BinaryIO,
        *,
        model: str,
        options: EmbedOptions,
        owner: str,
        reason: str,
        filename: str | None = None,
        trace: dict[str, str] | None = None,
        transform: dict[str, Any] | None = None,
        index: IndexTarget | None = None,
        detect: DetectRequest | None = None,
        verify: bool = False,
        classifier: str | None = None,
        classifier_tenant: str | None = None,
    ) -> JobRecord:
        job_id = new_job_id()
        source.seek(0, io.SEEK_SET)
        try:
            size = self.jobs.put_payload(job_id, source)
            stamp = now()
            record = self.jobs.save(
                JobRecord(
                    job_id=job_id,
                    status=JobStatus.QUEUED,
                    owner=owner,
                    model=model,
                    reason=reason,
                    submitted_at=stamp,
                    updated_at=stamp,
                    payload_bytes=size,
                )
            )
            message = DeferredRequest(
                job_id=job_id,
                payload_key=self.jobs.payload_key(job_id),
                model=model,
                options=dataclasses.asdict(options),
                filename=filename,
                submitted_at=stamp,
                reason=reason,
                trace=trace or {},
                transform=transform or {},
                index=index,
                detect=detect,
                verify=verify,
                classifier=classifier,
                classifier_tenant=classifier_tenant,
            )
            # Unset, the newer fields stay out: a worker that predates them still takes the
            # requests it can answer as asked during a rolling deploy.
            newer = ("detect", "verify", "classifier", "classifier_tenant")
            unset = {name for name in newer if not getattr(message, name)}
            body = message.model_dump_json(exclude=unset)
            self.queue.send(body, {"kind": message.kind})
        except SevensenseError:
            raise
        except Exception as exc:  # a store or queue we do not wrap; never lose silently
            raise QueueError(f"could not defer the request: {exc}") from exc
        log.info("deferred job %s (%d bytes, %s): %s", job_id, size, model, reason)
        return record

    def submit_agile(self, message: AgileJob, *, owner: str, model: str, reason: str) -> JobRecord:
        """An agile job (train, apply): the record, then the message, as for a request."""
        try:
            record = self.jobs.save(
                JobRecord(
                    job_id=message.job_id,
                    status=JobStatus.QUEUED,
                    owner=owner,
                    model=model,
                    reason=reason,
                    submitted_at=message.submitted_at,
                    updated_at=message.submitted_at,
                    result_kind="classifier" if message.train is not None else "apply",
                )
            )
            self.queue.send(message.model_dump_json(), {"kind": message.kind})
        except SevensenseError:
            raise
        except Exception as exc:
            raise QueueError(f"could not queue the job: {exc}") from exc
        log.info("queued %s job %s: %s", record.result_kind, message.job_id, reason)
        return record
