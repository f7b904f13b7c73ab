"""A deferred ``index=true`` request is indexed by the worker as a served one is: under the
submitting key's tenant and recording id, once however often the message is delivered."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sevensense.errors import IndexEmptyError
from sevensense.index.ingest import space_info
from sevensense.index.records import Scope
from sevensense.index.store import open_index
from sevensense.inference.engine import EmbeddingEngine, EmbedOptions
from sevensense.jobs.records import DeferredRequest, IndexTarget, JobStatus
from sevensense.jobs.store import JobStore
from sevensense.jobs.submit import Deferrer
from sevensense.queues.sqlite import SqliteQueue
from sevensense.storage.objects import open_store
from sevensense.worker.job_handler import DeferredHandler
from tests.conftest import audio, make_settings


def test_deferred_request_is_indexed_once_under_its_tenant(
    tmp_path: Path, engine: EmbeddingEngine
) -> None:
    settings = make_settings()
    settings.index.dir = tmp_path / "index"
    jobs = JobStore(open_store(str(tmp_path / "payloads")))
    queue = SqliteQueue(tmp_path / "queue.sqlite3")
    model = engine.model("birdnet-v2.4")
    target = IndexTarget(tenant="partner-a", recording_id="site-7/dawn.flac", site="site-7")
    with audio("perch_testclip_10s_16k.flac").open("rb") as source:
        record = Deferrer(jobs, queue).submit(
            source,
            model=str(model.manifest.identity),
            options=EmbedOptions(),
            owner="partner-a",
            reason="test",
            index=target,
        )
    assert record.status == JobStatus.QUEUED
    (message,) = queue.receive(wait_s=0)
    request = DeferredRequest.model_validate_json(message.body)
    assert request.index == target

    handler = DeferredHandler(EmbeddingEngine(settings), jobs, 3)
    first = handler.compute(request)
    again = handler.compute(request)  # a redelivery after a crash before the job was saved
    assert [w.embedding for w in again.windows] == [w.embedding for w in first.windows]

    index = open_index(settings)
    (stats,) = index.stats()
    assert stats.entries == len(first.windows) > 0 and stats.recordings == 1
    key = space_info(model.manifest).key
    query = np.array([first.windows[0].embedding], dtype=np.float32)
    (hits,) = index.search(key, query, 3, Scope(tenant="partner-a"))
    assert hits[0].recording_id == "site-7/dawn.flac" and hits[0].site == "site-7"
    assert hits[0].tenant == "partner-a" and hits[0].score > 0.999
    with pytest.raises(IndexEmptyError):  # another partner's view of the space is empty
        index.search(key, query, 3, Scope(tenant="partner-b"))
    index.close()
