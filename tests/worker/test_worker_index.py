"""The batch worker with ``worker.index``: each job's windows land in the index under the
batch tenant, keyed by the object's URI, and a redelivered message adds nothing twice, even
when the first delivery died after indexing and before its upload."""

from __future__ import annotations

from pathlib import Path

from sevensense.index.hoplite import HopliteIndex
from sevensense.index.records import Scope, SpaceKey
from sevensense.settings import IndexSettings
from tests.conftest import AUDIO
from tests.worker.conftest import PREFIX, Stack


def test_worker_indexes_outputs_idempotently(stack: Stack, tmp_path: Path) -> None:
    index_dir = tmp_path / "index"
    env = stack.env(
        SEVENSENSE_WORKER__INDEX="batchjobs",
        SEVENSENSE_WORKER__INDEX_TENANT="survey-2026",
        SEVENSENSE_INDEX__DIR=str(index_dir),
    )
    key = stack.upload(f"{PREFIX}site a/clip.flac", AUDIO / "perch_testclip_10s_16k.flac")
    rc, _, log = stack.run(env=env)
    assert rc == 0, log[-3000:]
    (out,) = stack.outputs()
    windows = stack.read_output(out).num_rows

    index = HopliteIndex(index_dir, "batchjobs", IndexSettings())
    space = SpaceKey(model_name="birdnet-v2.4", model_version="2.4.0")
    [stats] = index.stats()
    assert stats.entries == windows and stats.tenants == 1
    [rec] = index.recordings(space)
    assert rec.recording_id == f"s3://{stack.in_bucket}/{key}" and rec.tenant == "survey-2026"

    # the first delivery "died" after indexing, before its upload: the output is missing
    stack.s3.delete_object(Bucket=stack.out_bucket, Key=out)
    stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=stack.event_body(key))
    rc, _, log = stack.run(env=env)
    assert rc == 0, log[-3000:]
    assert stack.outputs() == [out]
    [stats] = index.stats()
    assert stats.entries == windows
    hits = index.search(
        space, stack.read_output(out).column("embedding")[0].as_py(), 3, Scope.of("survey-2026")
    )
    assert hits[0][0].recording_id == rec.recording_id and hits[0][0].start_s == 0.0
    index.close()
