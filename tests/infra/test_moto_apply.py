"""Integration: apply kms + storage-queues against a moto server on 127.0.0.1.

Terraform creates the real buckets, queues, queue policies and the S3 -> SQS
notification through the hashicorp/aws provider (endpoints overridden to moto in a
test-only *_override.tf written into a temporary copy of the tree). Then a real audio
recording is uploaded with boto3 and its ObjectCreated event must arrive on the created
batch-jobs queue; a job that is received but never completed must land in the batch DLQ
after maxReceiveCount receives. Nothing here can reach real AWS: fake credentials, every
endpoint the module touches points to loopback, and the metadata API is disabled.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path
from urllib.parse import unquote_plus

import boto3
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

from .conftest import REPO_ROOT, Terraform, copy_tree

AUDIO_DIR = REPO_ROOT.parent / "shared" / "audio"
AUDIO_FILE = AUDIO_DIR / "birdnet_sample_3s_48k.wav"
ROOT = Path("tests") / "moto-storage-queues"
REGION = "eu-west-1"
# Services the kms and storage-queues modules call.
ENDPOINT_SERVICES = ("s3", "sqs", "sts", "iam", "kms")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _override(endpoint: str) -> str:
    endpoints = "\n".join(f'    {svc} = "{endpoint}"' for svc in ENDPOINT_SERVICES)
    return f"""# Written by tests/infra/test_moto_apply.py into a temporary copy only.
provider "aws" {{
  region                      = "{REGION}"
  access_key                  = "testing"
  secret_key                  = "testing"
  s3_use_path_style           = true
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  skip_requesting_account_id  = false

  endpoints {{
{endpoints}
  }}
}}
"""


def _receive_object_created(sqs, queue_url: str, deadline_s: float = 30) -> list[dict]:
    """Drain the queue until at least one ObjectCreated record arrives (or the deadline)."""
    records: list[dict] = []
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        resp = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for msg in resp.get("Messages", []):
            body = json.loads(msg["Body"])
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=msg["ReceiptHandle"])
            if body.get("Event") == "s3:TestEvent":  # moto (and S3) send one first
                continue
            records.extend(body.get("Records", []))
        if records:
            # one more short poll so events for objects that must NOT match would show up
            resp = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
            for msg in resp.get("Messages", []):
                records.extend(json.loads(msg["Body"]).get("Records", []))
            return records
    return records


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_apply_storage_queues_and_receive_object_created(
    terraform: Terraform, tmp_path: Path
) -> None:
    assert AUDIO_FILE.is_file(), f"shared test audio missing: {AUDIO_FILE}"

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no per-request log lines
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    root = copy_tree(tmp_path) / ROOT
    (root / "provider_override.tf").write_text(_override(endpoint))
    try:
        terraform.init(root)
        t0 = time.monotonic()
        terraform.run(["apply", "-auto-approve", "-no-color"], root, timeout=600)
        print(f"terraform apply against moto: {time.monotonic() - t0:.1f}s")
        outputs = {
            k: v["value"]
            for k, v in json.loads(
                terraform.run(["output", "-json", "-no-color"], root).stdout
            ).items()
        }

        session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2})
        s3 = session.client("s3", endpoint_url=endpoint, config=cfg)
        sqs = session.client("sqs", endpoint_url=endpoint, config=cfg)

        bucket = outputs["batch_input_bucket"]
        prefix = outputs["batch_input_prefix"]
        queue_url = outputs["batch_queue_url"]

        # The created resources carry the intended settings.
        enc = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
        assert enc["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        pab = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert all(pab.values()), pab
        attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
        redrive = json.loads(attrs["RedrivePolicy"])
        assert int(redrive["maxReceiveCount"]) == 3
        assert redrive["deadLetterTargetArn"].endswith(":sevensense-it-batch-jobs-dlq")
        assert attrs["KmsMasterKeyId"].startswith("arn:aws:kms:")
        assert int(attrs["VisibilityTimeout"]) == 3600
        policy = json.loads(attrs["Policy"])
        allows = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
        assert len(allows) == 1
        assert allows[0]["Condition"]["ArnEquals"]["aws:SourceArn"] == f"arn:aws:s3:::{bucket}"

        # The TLS-only bucket policy is in place ...
        bucket_policy = s3.get_bucket_policy(Bucket=bucket)["Policy"]
        (deny,) = [s for s in json.loads(bucket_policy)["Statement"] if s["Effect"] == "Deny"]
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        # ... but moto 5.2.5 ignores the conditions of bucket-policy statements (it does
        # not implement the Bool operator), so this Deny would refuse every PutObject on
        # its plain-HTTP endpoint. Lift it for the upload, then put it back.
        s3.delete_bucket_policy(Bucket=bucket)
        try:
            # A real recording under the prefix, with a space to exercise key encoding.
            key = f"{prefix}site-42/birdnet sample 3s.wav"
            s3.upload_file(str(AUDIO_FILE), bucket, key)
            # Objects outside the filters must not create jobs.
            s3.put_object(Bucket=bucket, Key=f"{prefix}site-42/notes.txt", Body=b"not audio")
            s3.put_object(Bucket=bucket, Key="elsewhere/birdnet.wav", Body=b"RIFF")
        finally:
            s3.put_bucket_policy(Bucket=bucket, Policy=bucket_policy)

        records = _receive_object_created(sqs, queue_url)
        keys = [unquote_plus(r["s3"]["object"]["key"]) for r in records]
        assert keys == [key], f"unexpected events: {keys}"
        rec = records[0]
        assert rec["eventName"].startswith("ObjectCreated:")
        assert rec["s3"]["bucket"]["name"] == bucket
        assert rec["s3"]["object"]["size"] == AUDIO_FILE.stat().st_size

        # A job that keeps failing (received, never deleted) ends up in the batch DLQ
        # after maxReceiveCount (3) receives.
        s3.delete_bucket_policy(Bucket=bucket)
        try:
            poison = f"{prefix}site-42/poison.flac"
            s3.put_object(Bucket=bucket, Key=poison, Body=b"fLaC")
        finally:
            s3.put_bucket_policy(Bucket=bucket, Policy=bucket_policy)
        receives = 0
        for _ in range(10):
            msgs = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=2
            ).get("Messages", [])
            if not msgs:
                break
            receives += 1
            # the worker "crashes": make the message visible again at once
            sqs.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=msgs[0]["ReceiptHandle"], VisibilityTimeout=0
            )
        assert receives == 3, f"received {receives} times before dead-lettering"
        dead = sqs.receive_message(
            QueueUrl=outputs["batch_dlq_url"], MaxNumberOfMessages=1, WaitTimeSeconds=5
        ).get("Messages", [])
        assert len(dead) == 1
        (dead_record,) = json.loads(dead[0]["Body"])["Records"]
        assert unquote_plus(dead_record["s3"]["object"]["key"]) == poison
    finally:
        # No `terraform destroy`: it asserted nothing (its outcome was ignored) and cost
        # about 50 s; the state lives in this moto server and the temporary copy only.
        server.stop()
