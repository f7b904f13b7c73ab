"""``sevensense batch submit``: an archive already in S3 onto the batch queue, on moto.

100,000 objects from an S3 Inventory (manifest + gzipped CSV) enqueued, each exactly once,
what is done skipped; a listed prefix through the command line with its report; and a
worker fleet draining a 1,000-object prefix of real audio while one worker is SIGKILLed:
every object written exactly once, and a re-submit enqueues nothing.

Objects are put through moto's own backend in this process (the server the tests share
runs here), which creates 100,000 keys in seconds where 100,000 PUTs over HTTP take
minutes; listing, reading and queueing all go through the server over HTTP. moto's LIST
costs O(bucket) per page, so the 100,000 go through the inventory path (the one meant for
buckets that large) and the listing path is shown on a few thousand.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import numpy as np
import pytest
import soundfile as sf

from sevensense.archive.naming import OutputNaming
from sevensense.archive.submit import EVENT_NAME, submit_archive
from sevensense.queues.sqs import SqsQueue
from tests.conftest import AUDIO, REPO, make_settings
from tests.worker.conftest import OUT_PREFIX, SEVENSENSE, Stack, WorkerProcess, make_stack

pytestmark = pytest.mark.usefixtures("birdnet_artifact")

# The suite's size; SEVENSENSE_ARCHIVE_OBJECTS=100000 runs the (115 s of submit on a
# loaded 2-core machine, load 7; see docs/worker.md).
OBJECTS = int(os.environ.get("SEVENSENSE_ARCHIVE_OBJECTS", "20000"))
INVENTORY_COLUMNS = "Bucket, Key, Size, LastModifiedDate, ETag, IsLatest, IsDeleteMarker"
EMPTY_ETAG = "d41d8cd98f00b204e9800998ecf8427e"


def backend() -> Any:
    """moto's S3 store behind the shared server (same process)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]


def settings_for(stack: Stack) -> Any:
    settings = make_settings()
    settings.worker.batch_queue_url = stack.queue_url
    settings.worker.input_bucket = stack.in_bucket
    settings.worker.output_bucket = stack.out_bucket
    return settings


def queued_keys(stack: Stack) -> Counter[str]:
    """Every object key the batch queue holds, counted, read from moto's store in one pass
    (100 receive calls would cost O(queue) each on moto)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sqs.models import sqs_backends

    queue = sqs_backends[DEFAULT_ACCOUNT_ID]["eu-west-1"].queues[stack.queue_url.rsplit("/", 1)[-1]]
    seen: Counter[str] = Counter()
    for message in list(queue._messages):
        for record in json.loads(message.body).get("Records", []):  # not S3's TestEvent
            assert record["eventName"] == EVENT_NAME
            seen[unquote_plus(record["s3"]["object"]["key"])] += 1
    return seen


def write_inventory(stack: Stack, rows: list[list[str]], files: int) -> str:
    """An S3 Inventory report (CSV) in the output bucket; returns its manifest URI."""
    base = f"inventory/{stack.in_bucket}/all/2026-12-07T00-00Z"
    listed = []
    per_file = -(-len(rows) // files)
    for n in range(files):
        text = io.StringIO()
        csv.writer(text, quoting=csv.QUOTE_ALL).writerows(rows[n * per_file : (n + 1) * per_file])
        key = f"inventory/{stack.in_bucket}/all/data/part-{n}.csv.gz"
        body = gzip.compress(text.getvalue().encode())
        stack.s3.put_object(Bucket=stack.out_bucket, Key=key, Body=body)
        listed.append({"key": key, "size": len(body), "MD5checksum": "-"})
    manifest = {
        "sourceBucket": stack.in_bucket,
        "destinationBucket": f"arn:aws:s3:::{stack.out_bucket}",
        "version": "2016-11-30",
        "fileFormat": "CSV",
        "fileSchema": INVENTORY_COLUMNS,
        "files": listed,
    }
    key = f"{base}/manifest.json"
    stack.s3.put_object(Bucket=stack.out_bucket, Key=key, Body=json.dumps(manifest).encode())
    return f"s3://{stack.out_bucket}/{key}"


def test_inventory_enqueues_every_object_once_and_skips_done(
    moto_endpoint: str, tmp_path: Path
) -> None:
    stack = make_stack(moto_endpoint, tmp_path)
    settings = settings_for(stack)
    naming = OutputNaming.of(settings)
    store = backend()
    audio, rows = [], []
    for i in range(OBJECTS):  # a space and a plus: keys URL-encoded in the inventory
        key = f"archive/site {i // 2500:02d}/rec+{i:06d}.wav"
        store.put_object(stack.in_bucket, key, b"")
        audio.append(key)
    for i in range(1_000):
        rows.append(
            [stack.in_bucket, f"archive/notes/{i}.txt", "10", "-", EMPTY_ETAG, "true", "false"]
        )
    for key in audio:
        encoded = key.replace("+", "%2B").replace(" ", "+")
        rows.append([stack.in_bucket, encoded, "0", "-", EMPTY_ETAG, "true", "false"])
    rows.append([stack.in_bucket, "archive/gone.wav", "0", "-", EMPTY_ETAG, "true", "true"])
    rows.append([stack.in_bucket, "archive/old.wav", "0", "-", EMPTY_ETAG, "false", "false"])
    rows.append([stack.in_bucket, "elsewhere/x.wav", "0", "-", EMPTY_ETAG, "true", "false"])
    done = audio[::50]  # 2,000 already have the worker's output
    for key in done:
        store.put_object(stack.out_bucket, naming.key(key, EMPTY_ETAG), b"")
    manifest = write_inventory(stack, rows, files=4)

    queue = SqsQueue(stack.queue_url, client=stack.sqs)
    seen: list[int] = []
    started = time.monotonic()
    report = submit_archive(
        settings,
        f"s3://{stack.in_bucket}/archive/",
        inventory=manifest,
        per_message=100,
        s3=stack.s3,
        queue=queue,
        on_progress=lambda r: seen.append(r.listed),
    )
    elapsed = time.monotonic() - started
    assert report.finished and report.failed == 0, report.failures[:3]
    assert report.listed == OBJECTS + 1_000
    assert report.skipped == {"non_audio": 1_000}
    assert report.already_done == len(done) == OBJECTS // 50
    todo = OBJECTS - len(done)
    assert report.enqueued == todo
    assert todo // 100 <= report.messages <= todo // 100 + len(seen)  # a part message per page
    assert seen == sorted(seen) and seen[-1] == report.listed and len(seen) >= OBJECTS // 1000

    queued = queued_keys(stack)
    assert set(queued) == set(audio) - set(done) and max(queued.values()) == 1
    print(f"\n{OBJECTS}-object inventory: submitted in {elapsed:.1f} s")


# The suite drains 200; SEVENSENSE_ARCHIVE_CLIPS=1000 runs the 1,000 (about 5 min
# on a loaded 2-core machine: 0.4-0.5 s of one worker thread per clip at load 7).
CLIPS = int(os.environ.get("SEVENSENSE_ARCHIVE_CLIPS", "200"))
CLIP_S = 1.5
FLEET = "archive/fleet/"


def real_clips(count: int) -> list[bytes]:
    """``count`` different 1.5-s WAV clips (16 kHz) cut from the real 120-s soundscape."""
    import soxr

    audio, rate = sf.read(AUDIO / "soundscape_birdnet_120s_48k.ogg", dtype="float32")
    mono = soxr.resample(audio if audio.ndim == 1 else audio.mean(axis=1), rate, 16_000)
    length = int(CLIP_S * 16_000)
    step = (len(mono) - length) // count
    clips = []
    for n in range(count):
        buffer = io.BytesIO()
        sf.write(buffer, mono[n * step : n * step + length], 16_000, format="WAV", subtype="PCM_16")
        clips.append(buffer.getvalue())
    return clips


def submit_cli(stack: Stack, env: dict[str, str]) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(
        [str(SEVENSENSE), "batch", "submit", f"s3://{stack.in_bucket}/{FLEET}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def writes(*workers: WorkerProcess) -> Counter[str]:
    return Counter(
        uri for w in workers for uri in re.findall(r"wrote (s3://.+?\.parquet):", w.text())
    )


def found_done(*workers: WorkerProcess) -> set[str]:
    """Outputs a worker found already written when a message came to it again."""
    return {
        uri
        for w in workers
        for uri in re.findall(r"output (s3://.+?\.parquet) already exists", w.text())
    }


def test_fleet_drains_a_submitted_prefix_exactly_once_while_a_worker_dies(
    moto_endpoint: str, tmp_path: Path
) -> None:
    stack = make_stack(moto_endpoint, tmp_path)
    store = backend()
    clips = real_clips(CLIPS)
    keys = [f"{FLEET}site a/clip-{n:04d}.wav" for n in range(CLIPS)]
    for key, body in zip(keys, clips, strict=True):
        store.put_object(stack.in_bucket, key, body)
    store.put_object(stack.in_bucket, f"{FLEET}README.txt", b"field notes")
    big = np.zeros(160_000, dtype=np.int16).tobytes()  # over the 0.2 MB bound set below
    store.put_object(stack.in_bucket, f"{FLEET}big.wav", big)
    env = stack.env(SEVENSENSE_WORKER__MAX_OBJECT_MB="0.2")

    rc, report, err = submit_cli(stack, env)
    assert rc == 1, err  # one object failed to enqueue
    assert (report["listed"], report["enqueued"], report["already_done"]) == (CLIPS + 2, CLIPS, 0)
    assert report["skipped"] == {"non_audio": 1} and report["failed"] == 1
    (failure,) = report["failures"]
    assert failure["key"].endswith("big.wav") and failure["code"] == "object_too_large"

    started = time.monotonic()
    victim = stack.start("--concurrency", "2", env=env)
    survivor = stack.start("--concurrency", "2", "--once", env=env)
    deadline = time.monotonic() + 120
    while len(writes(victim)) < CLIPS // 20 and time.monotonic() < deadline:
        time.sleep(0.2)
    victim.signal(signal.SIGKILL)
    victim.proc.wait(timeout=10)
    killed_after = len(writes(victim))
    replacement = stack.start("--concurrency", "2", "--once", env=env)
    results = [w.finish(timeout=600) for w in (survivor, replacement)]
    drained_s = time.monotonic() - started
    for code, _, log in results:
        assert code == 0, log[-3000:]

    outputs = [k for k in stack.outputs() if k.startswith(f"{OUT_PREFIX}{FLEET}")]
    parquet = [k for k in outputs if k.endswith(".parquet")]
    assert len(parquet) == CLIPS
    per_input = Counter(k.split(".wav.")[0] + ".wav" for k in parquet)
    assert set(per_input) == {f"{OUT_PREFIX}{k}" for k in keys} and max(per_input.values()) == 1
    written = writes(victim, survivor, replacement)  # every upload a worker logged
    # the SIGKILL can land between the victim's upload and its log line: the redelivered
    # message then finds that output written, and nobody uploads it again
    unlogged = found_done(survivor, replacement) - set(written)
    assert len(unlogged) <= 2  # the victim's two slots
    uploaded = set(written) | unlogged
    assert {uri.split("/", 3)[3] for uri in uploaded} == set(parquet)
    assert len(uploaded) == CLIPS and max(written.values()) == 1
    done = sum(summary["outcomes"].get("done", 0) for _, summary, _ in results)
    assert done + killed_after + len(unlogged) == CLIPS
    assert stack.depth() == (0, 0) and stack.dead_letters() == []

    rc, again, err = submit_cli(stack, env)  # a re-submit finds everything done
    assert (again["enqueued"], again["already_done"], again["failed"]) == (0, CLIPS, 1), err
    print(
        f"\n{CLIPS} clips drained by 2 workers (+1 replacement after a SIGKILL at "
        f"{killed_after} written) in {drained_s:.1f} s"
    )
