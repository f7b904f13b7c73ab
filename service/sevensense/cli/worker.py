"""``sevensense worker``: serve the batch-jobs queue (S3 events) and the deferred queue.

The worker package is the loop and its handlers (S3 events in
:mod:`sevensense.worker.s3_batch`, deferred requests in :mod:`sevensense.worker.job_handler`);
this module is the face that wires them to the settings and the command line, so that
click stays out of the worker.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

import click

from sevensense.cli.common import fail
from sevensense.errors import SevensenseError

if TYPE_CHECKING:
    from sevensense.settings import Settings
    from sevensense.worker.base import Handler
    from sevensense.worker.runner import RunnerOptions, Worker

log = logging.getLogger("sevensense.worker")


def intra_threads_per_message(concurrency: int, cores: int | None = None) -> int:
    """ORT threads for each message when ``inference.intra_threads`` is 0 (auto): the cores
    shared out. Two messages at one thread each beat one at two threads (measured on 2 cores:
    0.93-0.95x the CLI's throughput vs 0.64-0.87x), because one message's S3 calls, decode
    and Parquet writing overlap the other's model time, as the CPU model service's layout
    does for requests (``settings.cpu_layout``)."""
    from sevensense.settings import process_cpus

    cores = cores or process_cpus()
    return max(1, min(cores, 4) // concurrency)


def build_worker(settings: Settings, *, queues: str, options: RunnerOptions) -> Worker:
    """The engine, handlers and queues a worker process runs with; raises if none fits.

    Imports are local so that every other ``sevensense`` command, which imports this module
    to register the command, does not pay for boto3 and the queue modules."""
    from sevensense.artifacts.catalog import default_model
    from sevensense.artifacts.registry import ModelRegistry
    from sevensense.inference.engine import EmbeddingEngine
    from sevensense.queues import open_batch_queue, open_deferred_queue
    from sevensense.storage.objects import default_s3_client
    from sevensense.worker.base import WorkerContext
    from sevensense.worker.events import KIND_S3
    from sevensense.worker.job_handler import deferred_handlers
    from sevensense.worker.runner import PolledQueue, Worker
    from sevensense.worker.s3_batch import S3BatchHandler

    registry = ModelRegistry(settings.models_dir)
    engine = EmbeddingEngine(settings, registry=registry)
    s3 = default_s3_client()
    context = WorkerContext(settings, engine, s3)
    handlers: dict[str, Handler] = {}
    polled: list[PolledQueue] = []
    if queues in ("batch", "all"):
        batch = open_batch_queue(settings)
        if batch is None:
            if queues == "batch":
                raise click.UsageError("no batch queue: set SEVENSENSE_BATCH_QUEUE_URL")
            log.warning("no batch queue configured (SEVENSENSE_BATCH_QUEUE_URL); not polled")
        else:
            model_ref = settings.worker.model or default_model(settings, registry.artifacts())
            handlers[KIND_S3] = S3BatchHandler(settings.worker, engine, s3, model_ref)
            polled.append(PolledQueue("batch", batch, settings.worker.visibility_timeout_s))
    handlers.update(deferred_handlers(context))
    if queues in ("deferred", "all"):
        deferred = open_deferred_queue(settings)
        polled.append(PolledQueue("deferred", deferred, settings.queue.visibility_timeout_s))
    if not polled:
        raise click.UsageError("no queue to serve")
    return Worker(polled, handlers, options)


@click.command("worker")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 64),
    default=None,
    help="messages processed at once (default: worker.concurrency)",
)
@click.option(
    "--queues", type=click.Choice(["batch", "deferred", "all"]), default="all", show_default=True
)
@click.option(
    "--once",
    is_flag=True,
    help="drain: exit when a poll finds the queues empty with nothing in flight",
)
@click.option(
    "--max-messages",
    type=click.IntRange(1),
    default=None,
    help="exit after handling this many messages",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Prometheus endpoint port, 0 = none (default: worker.metrics_port)",
)
@click.option(
    "--wait-s",
    type=click.IntRange(0, 20),
    default=None,
    help="long-poll seconds (default: worker.wait_time_s)",
)
@click.option(
    "--retry-backoff-s",
    type=click.FloatRange(0),
    default=10.0,
    show_default=True,
    help="first retry delay after a failure; doubles per receive",
)
@click.pass_context
def worker(
    ctx: click.Context,
    concurrency: int | None,
    queues: str,
    once: bool,
    max_messages: int | None,
    metrics_port: int | None,
    wait_s: int | None,
    retry_backoff_s: float,
) -> None:
    """Long-poll the batch-jobs and deferred-request queues and process their messages."""
    from sevensense.embeddings.quality import process_monitors
    from sevensense.worker.runner import RunnerOptions

    settings: Settings = ctx.find_root().obj["settings"]
    package = logging.getLogger("sevensense")
    if package.getEffectiveLevel() > logging.INFO:
        package.setLevel(logging.INFO)
    w = settings.worker
    threads = concurrency or w.concurrency
    if settings.inference.intra_threads == 0:
        settings.inference.intra_threads = intra_threads_per_message(threads)
    options = RunnerOptions(
        concurrency=threads,
        wait_s=w.wait_time_s if wait_s is None else wait_s,
        once=once,
        max_messages=max_messages,
        shutdown_grace_s=w.shutdown_grace_s,
        backoff_base_s=retry_backoff_s,
    )
    try:
        runner = build_worker(settings, queues=queues, options=options)
    except SevensenseError as exc:
        fail(exc)
    port = w.metrics_port if metrics_port is None else metrics_port
    if port:
        runner.metrics.serve(port)
        log.info("metrics on :%d/metrics", port)

    def on_signal(signum: int, _frame: object) -> None:
        runner.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stats = runner.run()
    summary = stats.to_dict()
    summary["quality"] = [
        q.model_dump(mode="json") for q in process_monitors(settings.quality).reports()
    ]
    click.echo(json.dumps(summary))
    if stats.stragglers:
        # A thread still inside a long poll or a cancelled model call: its message (if any)
        # was released; exiting now is what the grace period promised.
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(0)
