"""``sevensense worker``: S3-event batch jobs and deferred requests from message queues.

:mod:`~sevensense.worker.runner` is the loop (long polls, heartbeats, retries, DLQ,
shutdown), :mod:`~sevensense.worker.batch_job` the S3 object → Parquet job,
:mod:`~sevensense.worker.events` the message formats, :mod:`~sevensense.worker.base` the
handler contract other message kinds plug into.
"""
