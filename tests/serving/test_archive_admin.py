"""``POST /admin/batch/submissions``: ``sevensense batch submit`` over HTTP, on a real
server and moto: 202 with a status URL, the report there once it is finished, admin only,
a bad source refused with a typed 422."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from load_tests.server import Service, free_port
from sevensense.serving.access.keys import generate_key, hash_key
from tests.serving.conftest import base_env
from tests.worker.conftest import make_stack
from tests.worker.test_archive_submit import backend


def test_admin_route_enqueues_a_prefix_and_reports(
    moto_endpoint: str, serving_models: Path, tmp_path: Path
) -> None:
    stack = make_stack(moto_endpoint, tmp_path)
    store = backend()
    for n in range(30):
        store.put_object(stack.in_bucket, f"archive/admin/{n:02d}.flac", b"")
    store.put_object(stack.in_bucket, "archive/admin/index.html", b"<p>")
    keys = {"admin": generate_key(), "partner": generate_key()}
    records: list[dict[str, object]] = [
        {"id": "admin", "sha256": hash_key(keys["admin"]), "scopes": ["embed", "read", "admin"]},
        {"id": "partner", "sha256": hash_key(keys["partner"]), "scopes": ["embed", "read"]},
    ]
    aws = {k: v for k, v in stack.env().items() if k.startswith("AWS_")}
    env = base_env(
        serving_models,
        tmp_path / "state",
        records,
        **aws,
        SEVENSENSE_BATCH_QUEUE_URL=stack.queue_url,
        SEVENSENSE_INPUT_BUCKET=stack.in_bucket,
        SEVENSENSE_OUTPUT_BUCKET=stack.out_bucket,
    )
    service = Service(free_port(), env, tmp_path / "server.log", keys)
    service.start()
    try:
        url = f"{service.url}/admin/batch/submissions"
        admin = {"X-API-Key": keys["admin"]}
        body = {"source": f"s3://{stack.in_bucket}/archive/admin/", "per_message": 5}
        refused = httpx.post(url, json=body, headers={"X-API-Key": keys["partner"]})
        assert refused.status_code == 403
        bad = httpx.post(url, json={"source": "archive/admin/"}, headers=admin)
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "bad_archive_source"
        missing = httpx.get(f"{url}/{'0' * 32}", headers=admin)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "submission_not_found"

        accepted = httpx.post(url, json=body, headers=admin)
        assert accepted.status_code == 202, accepted.text
        status_url = service.url + accepted.headers["Location"]
        deadline = time.monotonic() + 60
        while True:
            report = httpx.get(status_url, headers=admin).json()["report"]
            if report["finished"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert report["finished"], report
        assert (report["listed"], report["enqueued"], report["messages"]) == (31, 30, 6)
        assert report["skipped"] == {"non_audio": 1} and report["failed"] == 0
        assert stack.depth()[0] == 6 + 1  # and S3's TestEvent
    finally:
        service.stop()
