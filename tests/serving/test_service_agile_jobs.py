"""Agile jobs on real parts (issue 26 item 2): a loopback server whose deferred queue is
SQS and job store S3 (the shared moto server), and a real ``sevensense worker`` process.
A ``POST /classifiers`` over a space larger than ``index.classifier_job_windows`` answers
202 and trains in the worker with progress; ``POST /classifiers/{ref}/apply`` writes the
scores Parquet, Raven files and call density to the job's store, served by
``GET /jobs/{id}/files/{name}``; tenancy and refusals as on the live routes."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from load_tests.server import Service, free_port
from sevensense.agile.store import ClassifierStore
from sevensense.serving.access.keys import generate_key
from tests.conftest import aws_client
from tests.serving.conftest import KEYS, service_env
from tests.serving.test_service_agile import CLAP, SOUNDSCAPE, SPACE, call, spans
from tests.serving.test_service_resilience import drain


@pytest.fixture(scope="module")
def jobs_server(
    tmp_path_factory: pytest.TempPathFactory, serving_models: Path, moto_endpoint: str
) -> Iterator[Service]:
    state = tmp_path_factory.mktemp("agile-jobs-state")
    models = tmp_path_factory.mktemp("agile-jobs-models")
    for entry in serving_models.iterdir():
        (models / entry.name).symlink_to(entry)
    tag = uuid.uuid4().hex[:10]
    bucket = f"agile-jobs-{tag}"
    aws_client("s3", moto_endpoint).create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    queue_url = aws_client("sqs", moto_endpoint).create_queue(QueueName=f"deferred-{tag}")[
        "QueueUrl"
    ]
    keys = {k: generate_key() for k in KEYS}
    env = service_env(
        models,
        state,
        keys,
        AWS_ENDPOINT_URL=moto_endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="eu-west-1",
        SEVENSENSE_QUEUE__BACKEND="sqs",
        SEVENSENSE_QUEUE__DEFERRED_QUEUE_URL=queue_url,
        SEVENSENSE_QUEUE__PAYLOAD_STORE=f"s3://{bucket}/jobs",
        SEVENSENSE_INDEX__CLASSIFIER_JOB_WINDOWS="20",
    )
    service = Service(free_port(), env, state / "server.log", keys)
    service.start()
    for path, rid in ((CLAP, str(CLAP)), (SOUNDSCAPE, "site7/soundscape")):
        with service.client("partner") as c, path.open("rb") as f:
            r = c.post(
                "/embed",
                files={"audio": (path.name, f.read(), "application/octet-stream")},
                data={"index": "true", "recording_id": rid, "overlap": "0", "top_k": "0"},
            )
            assert r.status_code == 200, r.text
            if rid == str(CLAP):
                claps = [w["start_s"] for w in r.json()["windows"] if any(w["embedding"])]
    items = spans(str(CLAP), tuple(claps[:3]), "clap") + spans(
        "site7/soundscape", (0.0, 15.0, 30.0, 45.0), "chorus"
    )
    r = call(service, "partner", "POST", "/annotations", json={**SPACE, "annotations": items})
    assert r.status_code == 200, r.text
    yield service
    service.stop()


def job(service: Service, key: str, job_id: str) -> Any:
    return call(service, key, "GET", f"/jobs/{job_id}").json()


def test_training_and_apply_run_as_jobs_in_the_worker(jobs_server: Service) -> None:
    s = jobs_server
    r = call(s, "partner", "POST", "/classifiers", json={**SPACE, "name": "claps"})
    assert r.status_code == 202, r.text
    train_id = r.json()["job_id"]
    assert r.headers["Location"] == f"/jobs/{train_id}" and "trained as a job" in r.json()["reason"]
    queued = job(s, "partner", train_id)
    assert (queued["status"], queued["result_kind"], queued["result"]) == (
        "queued",
        "classifier",
        None,
    )
    # refusals are answered at once, not queued
    r = call(s, "partner", "POST", "/classifiers", json={**SPACE, "name": "x", "labels": ["clap"]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "one_class_label_set"
    r = call(s, "partner", "POST", "/classifiers/nope/apply", json=SPACE)
    assert r.status_code == 404 and r.json()["error"]["code"] == "classifier_not_found"
    assert call(s, "reader", "POST", "/classifiers", json={**SPACE, "name": "x"}).status_code == 403

    drain(s)
    done = job(s, "partner", train_id)
    assert done["status"] == "done", done
    steps = done["result"]["manifest"]["report"]["options"]["steps"]
    assert done["result"]["classifier"] == "claps:1"
    assert done["progress"] == {"stage": "train", "done": steps, "total": steps}
    assert done["result_location"].startswith("s3://")
    assert call(s, "reader", "GET", f"/jobs/{train_id}").status_code == 404  # another key's

    body = {**SPACE, "formats": ["scores", "raven"], "density": "csv", "min_conf": 0.5}
    r = call(s, "reader", "POST", "/classifiers/claps/apply", json=body)
    assert r.status_code == 404  # the partner's classifier does not exist for another tenant
    r = call(s, "partner", "POST", "/classifiers/claps/apply", json=body)
    assert r.status_code == 202, r.text
    apply_id = r.json()["job_id"]
    drain(s)
    done = job(s, "partner", apply_id)
    assert done["status"] == "done", done
    result = done["result"]
    assert result["classifier"] == "claps:1" and result["recordings"] >= 1
    assert done["progress"]["stage"] == "score"
    assert done["progress"]["done"] == done["progress"]["total"] == result["windows"]
    names = {f["name"]: f for f in result["files"]}
    assert {"scores.parquet", "density_recordings.csv", "density_site_day.csv"} <= set(names)
    assert all(f["location"].startswith("s3://") for f in result["files"])
    scores = call(s, "partner", "GET", names["scores.parquet"]["url"])
    assert scores.status_code == 200
    table = pq.read_table(io.BytesIO(scores.content))
    assert table.num_rows == result["windows"]
    # the stored scores are the registered head's on the indexed vectors
    head = ClassifierStore(Path(s.env["SEVENSENSE_MODELS_DIR"])).resolve("claps").head
    clap_scores = np.asarray(table.column("clap"))
    assert ((clap_scores >= 0.5).sum(), head.classes) == (
        result["detections"]["clap"],
        head.classes,
    )
    raven = [n for n in names if n.endswith(".txt")]
    assert raven and "clap" in call(s, "partner", "GET", names[raven[0]]["url"]).text
    r = call(s, "partner", "GET", f"/jobs/{apply_id}/files/../{train_id}.json")
    assert r.status_code == 404
    assert call(s, "reader", "GET", names["scores.parquet"]["url"]).status_code == 404
