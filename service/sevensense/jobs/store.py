"""Job records, payloads and results in one object store (S3 prefix or local directory).

Layout under the store's root: ``payloads/<id>`` (the upload as received),
``jobs/<id>.json`` (the record), ``results/<id>.json`` (the answer). One store for all
three keeps a job's life in one place, readable by the gateway and the worker alike, and
lets one S3 lifecycle rule expire it all.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from sevensense.errors import JobNotFoundError, ObjectNotFoundError
from sevensense.jobs.records import JobRecord, JobStatus, check_job_id, now
from sevensense.storage.objects import ObjectStore


class JobStore:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    @staticmethod
    def payload_key(job_id: str) -> str:
        return f"payloads/{check_job_id(job_id)}"

    @staticmethod
    def record_key(job_id: str) -> str:
        return f"jobs/{check_job_id(job_id)}.json"

    @staticmethod
    def result_key(job_id: str) -> str:
        return f"results/{check_job_id(job_id)}.json"

    def save(self, record: JobRecord) -> JobRecord:
        record.updated_at = now()
        self.store.put_bytes(
            self.record_key(record.job_id),
            record.model_dump_json().encode(),
            content_type="application/json",
        )
        return record

    def get(self, job_id: str) -> JobRecord:
        try:
            raw = self.store.get_bytes(self.record_key(job_id))
        except ObjectNotFoundError:
            raise JobNotFoundError(f"no job {job_id}") from None
        return JobRecord.model_validate_json(raw)

    def start(self, job_id: str) -> JobRecord | None:
        """The record marked running for one more attempt; None when the job has ended
        already (a redelivered message must not run it again)."""
        record = self.get(job_id)
        if record.status in (JobStatus.DONE, JobStatus.FAILED):
            return None
        record.status = JobStatus.RUNNING
        record.started_at = record.started_at or now()
        record.attempts += 1
        return self.save(record)

    def put_payload(self, job_id: str, source: BinaryIO) -> int:
        return self.store.put_stream(self.payload_key(job_id), source)

    def open_payload(self, job_id: str) -> BinaryIO:
        return self.store.open(self.payload_key(job_id))

    def delete_payload(self, job_id: str) -> None:
        self.store.delete(self.payload_key(job_id))

    def put_result(self, job_id: str, body: bytes) -> str:
        key = self.result_key(job_id)
        self.store.put_bytes(key, body, content_type="application/json")
        return key

    def get_result(self, job_id: str) -> bytes:
        return self.store.get_bytes(self.result_key(job_id))

    @staticmethod
    def file_key(job_id: str, name: str) -> str:
        """A job's output file (an agile apply writes several), beside its result."""
        return f"results/{check_job_id(job_id)}/{name}"

    def put_file(self, job_id: str, name: str, path: Path) -> str:
        key = self.file_key(job_id, name)
        self.store.put_file(key, path)
        return key

    def open_file(self, job_id: str, name: str) -> BinaryIO:
        return self.store.open(self.file_key(job_id, name))

    def location(self, key: str) -> str:
        return self.store.location(key)
