"""``sevensense worker`` as a process against real boto3 and a real moto S3 → SQS pipeline.

The acceptance of the batch worker: outputs equal the CLI's, bad inputs end in the DLQ
with a reason while the worker goes on, a killed worker's message comes back and is
written once, visibility extension keeps a long job from a second worker, SIGTERM loses
nothing, and redelivered events write nothing new.
"""

from __future__ import annotations

import io
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from sevensense.inference.engine import EmbeddingEngine, EmbedOptions, WindowResult
from sevensense.inference.recordings import embed_recordings
from tests.conftest import AUDIO, MODELS, REPO
from tests.worker.conftest import OUT_PREFIX, PREFIX, SEVENSENSE, Stack, make_stack

pytestmark = pytest.mark.usefixtures("birdnet_artifact")

MODEL_TAG = "birdnet-v2.4-2.4.0-base"

TWENTY = [
    *sorted((AUDIO / "fish_queries_16k").glob("*.wav")),  # 9 WAV, 16 kHz
    *sorted((AUDIO / "labelled" / "tuxpaint").glob("*.ogg"))[:7],  # OGG/Vorbis, 44.1 kHz
    AUDIO / "perch_testclip_10s_16k.flac",
    AUDIO / "perch_testclip_10s_16k.mp3",
    AUDIO / "perch_testclip_10s_16k.opus",
    AUDIO / "soundscape_birdnet_120s_48k.ogg",
]


def reference(engine: EmbeddingEngine, path: Path) -> list[WindowResult]:
    rows: list[WindowResult] = []
    embed_recordings(engine, [path], rows.append, options=EmbedOptions())
    return rows


def embeddings(table: Any) -> np.ndarray:
    dim = table.schema.field("embedding").type.list_size
    rows = table.column("embedding").to_pylist()
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), dim)


def output_for(stack: Stack, key: str) -> list[str]:
    relative = key[len(PREFIX) :]
    return [
        k
        for k in stack.outputs()
        if k.startswith(f"{OUT_PREFIX}{relative}.{MODEL_TAG}.") and k.endswith(".parquet")
    ]


# --- 20 recordings, then the same events again --------------------------------------------


@pytest.fixture(scope="module")
def twenty(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    assert len(TWENTY) == 20 and all(p.is_file() for p in TWENTY)
    stack = make_stack(moto_endpoint, tmp_path_factory.mktemp("twenty"))
    keys = {}
    for path in TWENTY:
        keys[stack.upload(f"{PREFIX}job-20/{path.parent.name}/{path.name}", path)] = path
    rc, summary, log = stack.run("--concurrency", "2")
    return {"stack": stack, "keys": keys, "rc": rc, "summary": summary, "log": log}


def test_twenty_recordings_match_the_cli(twenty: dict[str, Any], tmp_path: Path) -> None:
    stack: Stack = twenty["stack"]
    assert twenty["rc"] == 0, twenty["log"][-3000:]
    assert twenty["summary"]["outcomes"] == {"done": 20, "test_event": 1}
    outputs = stack.outputs()
    assert len(outputs) == 20 and all(k.endswith(".parquet") for k in outputs)

    cli_out = tmp_path / "cli.parquet"
    proc = subprocess.run(
        [str(SEVENSENSE), "--models-dir", str(MODELS), "embed", *map(str, TWENTY),
         "--out", str(cli_out), "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    cli = pq.read_table(cli_out)
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, source in enumerate(cli.column("source").to_pylist()):
        by_source[source].append(i)
    cli_emb = embeddings(cli)
    assert cli.num_rows == twenty["summary"]["windows"] > 50
    # The worker's quality monitor (its run summary) saw every window it embedded.
    (quality,) = twenty["summary"]["quality"]
    assert (quality["model"], quality["seen"]) == ("birdnet-v2.4", cli.num_rows)
    assert quality["raw_norm"]["count"] == min(cli.num_rows, quality["window"])

    for key, path in twenty["keys"].items():
        (out_key,) = output_for(stack, key)
        table = stack.read_output(out_key)
        rows = by_source[str(path)]
        assert table.num_rows == len(rows), key  # 0 when every window is below the floor
        assert table.column("window_index").to_pylist() == [
            cli.column("window_index")[i].as_py() for i in rows
        ]
        np.testing.assert_allclose(embeddings(table), cli_emb[rows], atol=1e-5)
        assert set(table.column("source").to_pylist()) <= {f"s3://{stack.in_bucket}/{key}"}
        head = stack.s3.head_object(Bucket=stack.out_bucket, Key=out_key)
        meta = head["Metadata"]
        assert meta["source-bucket"] == stack.in_bucket
        assert meta["model"] == "birdnet-v2.4:2.4.0:base"
        assert int(meta["windows"]) == table.num_rows
        assert float(meta["audio-seconds"]) > 0
        assert meta["source-etag"][:16] in out_key


def test_redelivered_events_write_nothing_new(twenty: dict[str, Any]) -> None:
    stack: Stack = twenty["stack"]
    before = {
        k: stack.s3.head_object(Bucket=stack.out_bucket, Key=k)["LastModified"]
        for k in stack.outputs()
    }
    first, second = list(twenty["keys"])[:2]
    stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=stack.event_body(first))
    stack.put(second, twenty["keys"][second])  # same bytes again: a new event, same ETag
    rc, summary, log = stack.run()
    assert rc == 0, log[-3000:]
    assert summary["outcomes"] == {"exists": 2}
    assert log.count("already exists; skipping") == 2
    after = {
        k: stack.s3.head_object(Bucket=stack.out_bucket, Key=k)["LastModified"]
        for k in stack.outputs()
    }
    assert after == before


# --- the awkward inputs, in one worker run ------------------------------------------------


def test_awkward_inputs_are_handled_and_the_worker_goes_on(stack: Stack) -> None:
    fish = AUDIO / "fish_queries_16k"
    odd_keys = [
        f"{PREFIX}with space/Croak call.wav",
        f"{PREFIX}plus+sign/Oink+1.wav",
        f"{PREFIX}ünïcödé/grünfink ßäö.wav",
    ]
    for key, clip in zip(odd_keys, ("Croak.wav", "Oink.wav", "Yawn.wav"), strict=True):
        stack.put(key, fish / clip)
    stack.put(f"{PREFIX}broken.wav", np.random.default_rng(0).bytes(50_000))
    stack.put(f"{PREFIX}notes.txt", b"field notes, not audio")
    stack.put(f"{PREFIX}gone.wav", fish / "Rattle.wav")
    stack.s3.delete_object(Bucket=stack.in_bucket, Key=f"{PREFIX}gone.wav")
    stack.upload(f"{PREFIX}huge.flac", AUDIO / "soundscape_birdnet_120s_48k.flac")  # 3.2 MB
    stack.put(f"{PREFIX}replaced.wav", fish / "Scrape.wav")
    stack.put(f"{PREFIX}replaced.wav", fish / "Croak.wav")  # two events, the first one stale
    stack.put(f"{PREFIX}after-the-bad-ones.wav", fish / "Laugh.wav")

    env = stack.env(SEVENSENSE_WORKER__MAX_OBJECT_MB="1")
    rc, summary, log = stack.run(env=env)

    assert rc == 0, log[-4000:]
    assert "s3:TestEvent from bucket" in log and "acknowledged" in log
    assert f"skipped non-audio object s3://{stack.in_bucket}/{PREFIX}notes.txt" in log
    assert f"s3://{stack.in_bucket}/{PREFIX}gone.wav no longer exists" in log
    assert "over max_object_mb 1" in log
    assert f"s3://{stack.in_bucket}/{PREFIX}replaced.wav was replaced since its event" in log
    for key in [*odd_keys, f"{PREFIX}after-the-bad-ones.wav", f"{PREFIX}replaced.wav"]:
        (out_key,) = output_for(stack, key)
        assert stack.read_output(out_key).num_rows > 0
        assert f"wrote s3://{stack.out_bucket}/{out_key}" in log
    assert len(stack.outputs()) == 5
    etag = stack.s3.head_object(Bucket=stack.in_bucket, Key=f"{PREFIX}replaced.wav")["ETag"]
    assert etag.strip('"')[:16] in output_for(stack, f"{PREFIX}replaced.wav")[0]

    dead = {
        m["Body"]: {k: v["StringValue"] for k, v in m["MessageAttributes"].items()}
        for m in stack.dead_letters()
    }
    assert len(dead) == 2
    by_code = {attrs["failure_code"]: (body, attrs) for body, attrs in dead.items()}
    assert set(by_code) == {"unsupported_audio_format", "object_too_large"}
    body, attrs = by_code["unsupported_audio_format"]
    assert "broken.wav" in body and "broken.wav" in attrs["failure_reason"]
    assert attrs["receive_count"] == "3"  # retried up to maxReceiveCount, then dead-lettered
    assert log.count("broken.wav: failed after 0 windows") == 3
    body, attrs = by_code["object_too_large"]
    assert "huge.flac" in body and "max_object_mb" in attrs["failure_reason"]
    assert attrs["receive_count"] == "1"  # permanent: no retries
    assert summary["outcomes"] == {
        "dead_lettered": 2,
        "done": 5,
        "missing": 1,
        "retry": 2,
        "skipped": 1,
        "superseded": 1,
        "test_event": 1,
    }
    assert stack.depth() == (0, 0)


# --- a killed worker; a long job and a second worker --------------------------------------


def test_killed_worker_message_returns_and_is_written_once(
    moto_endpoint: str, tmp_path: Path, long_flac: Path, engine: EmbeddingEngine
) -> None:
    stack = make_stack(moto_endpoint, tmp_path, visibility_s=10)
    key = stack.upload(f"{PREFIX}long/30min.flac", long_flac)

    first = stack.start("--once")
    first.wait_for(f"processing s3://{stack.in_bucket}/{key}")
    time.sleep(2.0)
    first.proc.kill()
    first.proc.wait(timeout=10)
    killed_at = time.monotonic()
    assert stack.outputs() == []
    assert stack.depth()[1] == 1  # still hidden: no one deletes it, no one extends it

    retry = stack.start("--once")
    expected = reference(engine, long_flac)  # meanwhile: the clean run, in this process
    text = retry.wait_for(f"processing s3://{stack.in_bucket}/{key}", timeout=60)
    assert "receive 2 of 3" in text
    assert time.monotonic() - killed_at >= 5  # it came back only after its timeout
    rc, summary, log = retry.finish(timeout=240)
    assert rc == 0, log[-3000:]
    assert summary["outcomes"]["done"] == 1

    outputs = stack.outputs()
    assert len(outputs) == 1
    table = stack.read_output(outputs[0])
    assert table.num_rows == len(expected) == 600  # 30 min in 3-s windows, none silent
    assert table.column("window_index").to_pylist() == [r.index for r in expected]
    np.testing.assert_allclose(embeddings(table), np.stack([r.embedding for r in expected]),
                               atol=1e-5)  # fmt: skip
    assert stack.depth() == (0, 0)
    assert stack.dead_letters() == []


def test_visibility_extension_keeps_a_long_job_from_a_second_worker(
    moto_endpoint: str, tmp_path: Path, two_hour_flac: Path
) -> None:
    stack = make_stack(moto_endpoint, tmp_path, visibility_s=10)
    key = stack.upload(f"{PREFIX}long/120min.flac", two_hour_flac)
    # One ORT thread and two hours (about 28 s here; one hour took 14 s once the converter's
    # front end got faster): the job must outlast the 10-s timeout on faster machines too.
    busy = stack.start("--once", env=stack.env(SEVENSENSE_INFERENCE__INTRA_THREADS="1"))
    busy.wait_for(f"processing s3://{stack.in_bucket}/{key}", timeout=60)
    rival = stack.start("--once")  # polls all along, and leaves once the queue is drained
    rc, summary, log = busy.finish(timeout=240)
    assert rc == 0, log[-3000:]
    rival_rc, rival_summary, rival_log = rival.finish(timeout=60)
    assert rival_rc == 0, rival_log[-3000:]
    assert rival_summary["received"] == 0, rival_log[-3000:]

    (wrote,) = [line for line in log.splitlines() if "wrote s3://" in line]
    seconds = float(wrote.split(" s audio in ")[1].split(" s ")[0])
    assert seconds > 1.5 * stack.visibility_s, "the job must outlast its visibility timeout"
    assert log.count("visibility extended by 10 s") >= seconds // 10
    assert summary["outcomes"]["done"] == 1 and len(stack.outputs()) == 1


# --- SIGTERM -------------------------------------------------------------------------------


def test_sigterm_lets_the_current_message_finish(stack: Stack) -> None:
    key = stack.upload(f"{PREFIX}soundscape.flac", AUDIO / "soundscape_birdnet_120s_48k.flac")
    worker = stack.start()  # not --once: it would serve forever
    worker.wait_for(f"processing s3://{stack.in_bucket}/{key}")
    worker.signal(signal.SIGTERM)
    rc, summary, log = worker.finish(timeout=60)
    assert rc == 0, log[-3000:]
    assert "stop requested" in log
    assert summary["outcomes"].get("done") == 1
    assert len(output_for(stack, key)) == 1
    assert stack.depth() == (0, 0)


def test_sigterm_past_the_grace_period_releases_the_message(stack: Stack, long_flac: Path) -> None:
    key = stack.upload(f"{PREFIX}long.flac", long_flac)
    worker = stack.start(env=stack.env(SEVENSENSE_WORKER__SHUTDOWN_GRACE_S="1"))
    worker.wait_for(f"processing s3://{stack.in_bucket}/{key}")
    worker.signal(signal.SIGTERM)
    rc, summary, log = worker.finish(timeout=30)
    assert rc == 0, log[-3000:]
    assert "grace period over" in log and "released" in log
    assert summary["outcomes"] == {"released": 1, "test_event": 1}
    assert stack.outputs() == []
    # Nothing lost: visible again at once, long before its 10-s visibility timeout.
    got = stack.sqs.receive_message(
        QueueUrl=stack.queue_url, WaitTimeSeconds=2, AttributeNames=["All"]
    )["Messages"]
    assert "long.flac" in got[0]["Body"]
    assert got[0]["Attributes"]["ApproximateReceiveCount"] == "2"


def test_a_bucket_of_recordings_yields_a_raven_table_per_recording(
    stack: Stack, tmp_path: Path
) -> None:
    recordings = [
        AUDIO / "soundscape_birdnet_120s_48k.ogg",
        AUDIO / "labelled" / "common_yellowthroat.mp3",
    ]
    keys = {stack.upload(f"{PREFIX}raven/{p.name}", p): p for p in recordings}
    rc, summary, log = stack.run(env=stack.env(SEVENSENSE_WORKER__DETECTIONS_FORMAT="raven"))
    assert rc == 0, log[-3000:]
    assert summary["outcomes"]["done"] == 2
    outputs = stack.outputs()
    for key, path in keys.items():
        (parquet,) = output_for(stack, key)
        table_key = parquet.removesuffix(".parquet") + ".BirdNET.selection.table.txt"
        assert table_key in outputs
        served = stack.s3.get_object(Bucket=stack.out_bucket, Key=table_key)["Body"].read().decode()
        cli_out = tmp_path / f"{path.stem}.txt"
        proc = subprocess.run(
            [str(SEVENSENSE), "--models-dir", str(MODELS), "detect", str(path),
             "--out", str(cli_out), "--format", "raven", "--quiet"],
            cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        # Identical but for the path each names the recording by.
        mine = cli_out.read_text().replace(str(path), f"s3://{stack.in_bucket}/{key}")
        assert served == mine
        assert len(served.splitlines()) > 1


def test_the_worker_applies_its_species_filter(stack: Stack) -> None:
    key = stack.upload(
        f"{PREFIX}filtered/soundscape.ogg", AUDIO / "soundscape_birdnet_120s_48k.ogg"
    )
    located = stack.env(
        SEVENSENSE_WORKER__DETECTIONS_FORMAT="csv",
        SEVENSENSE_WORKER__SPECIES__LAT="42.48",
        SEVENSENSE_WORKER__SPECIES__LON="-76.45",
        SEVENSENSE_WORKER__SPECIES__WEEK="20",
    )
    rc, _, log = stack.run(env=located)
    assert rc == 0, log[-3000:]
    (parquet,) = output_for(stack, key)
    body = (
        stack.s3.get_object(
            Bucket=stack.out_bucket, Key=parquet.removesuffix(".parquet") + ".BirdNET.results.csv"
        )["Body"]
        .read()
        .decode()
    )
    names = {line.split(",")[2] for line in body.splitlines()[1:]}
    assert names and "Clamator coromandus" not in names  # an Asian cuckoo, not Ithaca's
    raw = stack.s3.get_object(Bucket=stack.out_bucket, Key=parquet)["Body"].read()
    meta = pq.ParquetFile(io.BytesIO(raw)).metadata.metadata[b"sevensense"]
    assert b'"species_filter"' in meta and b'"size": 132' in meta
    bad = stack.env(SEVENSENSE_WORKER__SPECIES__LAT="91", SEVENSENSE_WORKER__SPECIES__LON="0")
    rc, _, log = stack.run(env=bad)
    assert rc == 2 and "lat" in log
