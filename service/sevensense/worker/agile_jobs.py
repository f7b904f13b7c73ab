"""The worker's side of an agile job (issue 26): train a classifier on a scope too large to
train while the caller waits, or run one over every window of a scope and store the files
(scores Parquet, BirdNET-Analyzer formats, call density) beside the job's result.

Progress goes to the job record (``GET /jobs/{id}``) at most once a second, and each
report checks the heartbeat, so a shutting-down worker gives the message back. A
redelivered message of a finished job does nothing; one whose worker died while training
trains again (a new version: versions are never overwritten).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from sevensense.agile.bulk import apply_classifier
from sevensense.agile.store import ClassifierStore
from sevensense.agile.workflow import train_classifier
from sevensense.errors import SevensenseError
from sevensense.index.records import Scope
from sevensense.index.store import open_index
from sevensense.jobs.records import (
    AgileJob,
    ApplyJobResult,
    JobFile,
    JobProgress,
    JobRecord,
    JobStatus,
    TrainJobResult,
    now,
)
from sevensense.jobs.store import JobStore
from sevensense.queues.base import Message
from sevensense.settings import Settings
from sevensense.worker.base import CancelledError, HandlerResult, Heartbeat

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 1.0


class _Reporter:
    """``(done, total)`` callbacks → the record's progress, throttled; a cancelled
    heartbeat stops the work there."""

    def __init__(self, jobs: JobStore, record: JobRecord, heartbeat: Heartbeat | None) -> None:
        self.jobs, self.record, self.heartbeat = jobs, record, heartbeat
        self.last = 0.0

    def stage(self, name: str) -> Any:
        def report(done: int, total: int) -> None:
            if self.heartbeat is not None:
                self.heartbeat.check()
            tick = time.monotonic()
            if tick - self.last >= PROGRESS_EVERY_S or done == total:
                self.last = tick
                self.record.progress = JobProgress(stage=name, done=done, total=total)
                self.jobs.save(self.record)

        return report


class AgileHandler:
    def __init__(self, settings: Settings, jobs: JobStore) -> None:
        self.settings = settings
        self.jobs = jobs

    def __call__(self, message: Message, heartbeat: Heartbeat | None = None) -> HandlerResult:
        job = AgileJob.model_validate_json(message.body)
        record = self.jobs.start(job.job_id)
        if record is None:
            log.info("job %s has ended already; redelivery ignored", job.job_id)
            return HandlerResult("exists", detail=job.job_id)
        started = time.perf_counter()
        try:
            body, windows = self.run(job, _Reporter(self.jobs, record, heartbeat))
        except CancelledError:
            record.status = JobStatus.QUEUED
            self.jobs.save(record)
            raise
        except SevensenseError as exc:
            # A refusal (too few examples, another space, unknown classifier) will not
            # change on a retry: the job fails with the error the live route would answer.
            record.status = JobStatus.FAILED
            record.error = exc.to_dict()
            record.finished_at = now()
            self.jobs.save(record)
            return HandlerResult("failed", detail=f"{record.job_id}: {exc.code}")
        key = self.jobs.put_result(record.job_id, body.encode())
        record.status = JobStatus.DONE
        record.finished_at = now()
        record.result_key = key
        record.result_location = self.jobs.location(key)
        record.result_bytes = len(body)
        record.windows = windows
        record.error = None
        self.jobs.save(record)
        log.info("%s job %s done", record.result_kind, record.job_id)
        return HandlerResult(
            "done", windows=windows, detail=f"{time.perf_counter() - started:.1f} s"
        )

    def run(self, job: AgileJob, report: _Reporter) -> tuple[str, int]:
        """The result's JSON and the windows it covered."""
        index = open_index(self.settings, job.index)
        try:
            space = index.space(job.space)
            scope = Scope(tenant=job.tenant)
            store = ClassifierStore(self.settings.models_dir)
            if job.train is not None:
                t = job.train
                trained = train_classifier(
                    index, space, scope, store, t.name, t.labels, t.options, report.stage("train")
                )
                r = trained.manifest.report
                result = TrainJobResult(classifier=trained.ref, manifest=trained.manifest)
                return result.model_dump_json(), r.train_windows + r.eval_windows
            if job.apply is None:
                raise SevensenseError(f"job {job.job_id} names no task")
            a = job.apply
            classifier = store.resolve(a.classifier, job.tenant)
            with tempfile.TemporaryDirectory(prefix="sevensense-apply-") as tmp:
                out = Path(tmp)
                summary = apply_classifier(
                    index,
                    space,
                    scope,
                    classifier,
                    out,
                    a.formats,
                    min_conf=a.min_conf,
                    density=a.density,
                    on_block=report.stage("score"),
                )
                files: list[JobFile] = []
                for name in summary.files:
                    relative = Path(name).relative_to(out).as_posix()
                    key = self.jobs.put_file(job.job_id, relative, Path(name))
                    url = f"/jobs/{job.job_id}/files/{relative}"
                    files.append(JobFile(name=relative, location=self.jobs.location(key), url=url))
            applied = ApplyJobResult(**summary.model_dump(exclude={"files"}), files=files)
            return applied.model_dump_json(), summary.windows
        finally:
            index.close()
