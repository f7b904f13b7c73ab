"""A real S3 → SQS batch pipeline on the shared moto server, and the worker as a process.

Each test gets its own input and output buckets, a batch queue wired to the input bucket's
ObjectCreated notifications (prefix ``incoming/``, as the Terraform module does) and a
dead-letter queue behind a RedrivePolicy, so tests can share one moto server.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.worker_throughput import real_long_recording
from tests.conftest import MODELS, REPO, aws_client

SEVENSENSE = REPO / ".venv" / "bin" / "sevensense"
PREFIX = "incoming/"
OUT_PREFIX = "embeddings/"
_names = itertools.count()


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[str]
    log: Path
    started: float = field(default_factory=time.monotonic)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if needle in text:
                return text
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not logged within {timeout} s:\n{self.text()[-4000:]}")

    def finish(self, timeout: float = 120.0) -> tuple[int, dict[str, Any], str]:
        """Exit status, the JSON run summary printed on stdout, and the log."""
        out, _ = self.proc.communicate(timeout=timeout)
        summary = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        return self.proc.returncode, summary, self.text()

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)


@dataclass
class Stack:
    endpoint: str
    tmp: Path
    s3: Any
    sqs: Any
    in_bucket: str
    out_bucket: str
    queue_url: str
    dlq_url: str
    visibility_s: int
    max_receives: int

    def put(self, key: str, source: Path | bytes) -> str:
        body = source if isinstance(source, bytes) else source.read_bytes()
        self.s3.put_object(Bucket=self.in_bucket, Key=key, Body=body)
        return key

    def upload(self, key: str, path: Path) -> str:
        """One PUT, streamed from the file: moto notifies a multipart upload twice
        (ObjectCreated:Put and :CompleteMultipartUpload) where S3 notifies once."""
        with path.open("rb") as body:
            self.s3.put_object(Bucket=self.in_bucket, Key=key, Body=body)
        return key

    def outputs(self) -> list[str]:
        found: list[str] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.out_bucket):
            found.extend(o["Key"] for o in page.get("Contents", []))
        return sorted(found)

    def read_output(self, key: str) -> pa.Table:
        body = self.s3.get_object(Bucket=self.out_bucket, Key=key)["Body"].read()
        return pq.read_table(io.BytesIO(body))

    def event_body(self, key: str) -> str:
        """The ObjectCreated notification S3 sends for ``key`` as it is now."""
        head = self.s3.head_object(Bucket=self.in_bucket, Key=key)
        record = {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "eventName": "ObjectCreated:Put",
            "s3": {
                "bucket": {"name": self.in_bucket},
                "object": {
                    "key": quote_plus(key, safe="/"),
                    "size": head["ContentLength"],
                    "eTag": head["ETag"].strip('"'),
                },
            },
        }
        return json.dumps({"Records": [record]})

    def depth(self, url: str | None = None) -> tuple[int, int]:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        attrs = self.sqs.get_queue_attributes(QueueUrl=url or self.queue_url, AttributeNames=names)
        return tuple(int(attrs["Attributes"][n]) for n in names)  # type: ignore[return-value]

    def dead_letters(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            got = self.sqs.receive_message(
                QueueUrl=self.dlq_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                MessageAttributeNames=["All"],
            ).get("Messages", [])
            if not got:
                return found
            found.extend(got)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SEVENSENSE_", "AWS_"))}
        env.update(
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="eu-west-1",
            BENTOML_DO_NOT_TRACK="true",
            SEVENSENSE_MODELS_DIR=str(MODELS),
            SEVENSENSE_SERVING__STATE_DIR=str(self.tmp / "state"),
            SEVENSENSE_INFERENCE__PROVIDERS='["cpu"]',
            SEVENSENSE_BATCH_QUEUE_URL=self.queue_url,
            SEVENSENSE_INPUT_BUCKET=self.in_bucket,
            SEVENSENSE_INPUT_PREFIX=PREFIX,
            SEVENSENSE_OUTPUT_BUCKET=self.out_bucket,
            SEVENSENSE_VISIBILITY_TIMEOUT_S=str(self.visibility_s),
            SEVENSENSE_WORKER__WAIT_TIME_S="1",
            SEVENSENSE_WORKER__METRICS_PORT="0",
        )
        env.update(extra)
        return env

    def start(self, *args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        log = self.tmp / f"worker-{next(_names)}.log"
        handle = log.open("w")
        proc = subprocess.Popen(
            [str(SEVENSENSE), "worker", "--queues", "batch", "--retry-backoff-s", "0", *args],
            cwd=REPO,
            env=env or self.env(),
            stdout=subprocess.PIPE,
            stderr=handle,
            text=True,
        )
        handle.close()
        return WorkerProcess(proc, log)

    def run(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
        return self.start("--once", *args, env=env).finish()


def make_stack(endpoint: str, tmp: Path, visibility_s: int = 10, max_receives: int = 3) -> Stack:
    s3, sqs = aws_client("s3", endpoint), aws_client("sqs", endpoint)
    tag = uuid.uuid4().hex[:10]
    in_bucket, out_bucket = f"batch-in-{tag}", f"batch-out-{tag}"
    for bucket in (in_bucket, out_bucket):
        s3.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
        )
    dlq_url = sqs.create_queue(QueueName=f"batch-dlq-{tag}")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    policy = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receives)}
    queue_url = sqs.create_queue(
        QueueName=f"batch-jobs-{tag}",
        Attributes={"RedrivePolicy": json.dumps(policy), "VisibilityTimeout": str(visibility_s)},
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=in_bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": queue_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": PREFIX}]}},
                }
            ]
        },
    )
    (tmp / "state").mkdir(parents=True, exist_ok=True)
    return Stack(
        endpoint,
        tmp,
        s3,
        sqs,
        in_bucket,
        out_bucket,
        queue_url,
        dlq_url,
        visibility_s,
        max_receives,
    )


@pytest.fixture
def stack(moto_endpoint: str, tmp_path: Path) -> Stack:
    return make_stack(moto_endpoint, tmp_path)


def long_recording(path: Path, minutes: float, rate: int = 16_000) -> Path:
    """Real recordings repeated to length over a field noise floor (the benchmark's)."""
    return real_long_recording(path, minutes * 60.0, rate)


@pytest.fixture(scope="module")
def long_flac(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield long_recording(tmp_path_factory.mktemp("long") / "long_30min_16k.flac", 30.0)


@pytest.fixture(scope="module")
def two_hour_flac(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield long_recording(tmp_path_factory.mktemp("long") / "long_120min_16k.flac", 120.0)
