"""``sevensense worker``: S3-event batch jobs and deferred requests from message queues.

:mod:`~sevensense.worker.runner` is the loop (long polls, heartbeats, retries, DLQ,
shutdown), :mod:`~sevensense.worker.s3_batch` the S3 object → Parquet handler,
:mod:`~sevensense.worker.job_handler` the deferred-request handler,
:mod:`~sevensense.worker.events` the message formats, :mod:`~sevensense.worker.base` the
handler contract other message kinds plug into.
"""
