"""The deferred-request handler as the worker runs it."""

from __future__ import annotations

from sevensense.deferred.handler import DeferredHandler
from sevensense.deferred.job_store import JobStore
from sevensense.deferred.records import KIND
from sevensense.storage.objects import open_store
from sevensense.worker.base import Handler, WorkerContext


def worker_handlers(context: WorkerContext) -> dict[str, Handler]:
    jobs = JobStore(open_store(context.settings.payload_uri()))
    handler = DeferredHandler(context.engine, jobs, context.settings.queue.max_receives)
    return {KIND: handler}
