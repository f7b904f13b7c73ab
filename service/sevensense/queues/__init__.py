"""Queues for deferred requests and batch jobs: SQS in AWS, an embedded SQLite queue
elsewhere, both behind :class:`MessageQueue` with SQS's semantics."""

from __future__ import annotations

from sevensense.errors import ConfigError
from sevensense.queues.base import Message, MessageQueue, QueueDepth
from sevensense.settings import Settings

__all__ = [
    "Message",
    "MessageQueue",
    "QueueDepth",
    "open_batch_queue",
    "open_deferred_queue",
]


def open_deferred_queue(settings: Settings) -> MessageQueue:
    """The queue the gateway defers requests to when no model path can take them."""
    queue = settings.queue
    if queue.backend == "sqs":
        if not queue.deferred_queue_url:
            raise ConfigError(
                "queue.backend is 'sqs' but no deferred_queue_url is set "
                "(SEVENSENSE_QUEUE__DEFERRED_QUEUE_URL or SEVENSENSE_DEFERRED_QUEUE_URL)"
            )
        from sevensense.queues.sqs import SqsQueue

        return SqsQueue(
            queue.deferred_queue_url,
            default_max_receives=queue.max_receives,
            visibility_s=queue.visibility_timeout_s,
        )
    from sevensense.queues.sqlite import SqliteQueue

    return SqliteQueue(
        settings.queue_db(),
        "deferred",
        max_receives=queue.max_receives,
        visibility_s=queue.visibility_timeout_s,
    )


def open_batch_queue(settings: Settings) -> MessageQueue | None:
    """The S3-event queue of batch jobs, or None when this deployment has none."""
    worker = settings.worker
    if not worker.batch_queue_url:
        return None
    from sevensense.queues.sqs import SqsQueue

    return SqsQueue(
        worker.batch_queue_url,
        default_max_receives=worker.max_receives,
        visibility_s=worker.visibility_timeout_s,
    )
