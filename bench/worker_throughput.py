"""``sevensense worker`` against a moto S3 → SQS pipeline: throughput vs the CLI, and memory
that does not grow with the recording's length.

    make bench-worker     # or: .venv/bin/python -m bench.worker_throughput [--rounds 3]

(a) 20 real recordings (mixed codecs, 564 s) as one S3 job: the worker (a process, long
    polling a moto queue, streaming each object with ranged GETs, uploading Parquet) vs
    ``sevensense embed`` on the same 20 local files, each with its default thread layout on
    this machine. Both in × real time over their busy time (model loading excluded on both
    sides: the CLI's own "in X s", the worker's first receipt to last outcome), interleaved
    CLI, worker x1, worker x2, CLI, …; medians and ratios. x1 = one message at a time
    (all cores to ORT), x2 = two messages at once (the cores shared out).
(b) Peak RSS (VmHWM of the worker process, read from /proc as ``bench.rss_probe`` does) while
    it processes one 10-minute and one 2-hour object built from real audio repeated.

moto runs in this process on loopback, so its request handling shares the cores with the
worker; against real S3 the worker's side only gets lighter.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from sevensense.settings import repo_root

REPO = repo_root()
AUDIO = REPO.parent / "shared" / "audio"
SEVENSENSE = REPO / ".venv" / "bin" / "sevensense"
REGION = "eu-west-1"
PREFIX = "incoming/"


def twenty_recordings() -> list[Path]:
    named = [
        "soundscape_birdnet_120s_48k.flac",
        "soundscape_birdnet_120s_48k.ogg",
        "soundscape_birdnet_120s_48k.mp3",
        "xc563936_soundscape_72s_48k.mp3",
        "perch_clap_21s_16k.wav",
        "perch_testclip_10s_16k.wav",
        "perch_testclip_10s_16k.flac",
        "perch_testclip_10s_16k.ogg",
        "perch_testclip_10s_16k.opus",
        "perch_testclip_10s_16k.mp3",
        "labelled/opensoundscape_birds_10s_32k.wav",
        "labelled/common_yellowthroat.mp3",
    ]
    files = [AUDIO / n for n in named] + sorted((AUDIO / "fish_queries_16k").glob("*.wav"))[:8]
    assert len(files) == 20 and all(f.is_file() for f in files), files
    return files


def real_long_recording(path: Path, seconds: float, rate: int = 16_000) -> Path:
    """Real 16-kHz recordings end to end, repeated to length over a -50 dBFS noise floor
    (no window is skipped as silent), written block by block as FLAC."""
    clips = [AUDIO / "perch_testclip_10s_16k.wav", AUDIO / "perch_clap_21s_16k.wav"]
    clips += sorted((AUDIO / "fish_queries_16k").glob("*.wav"))
    base = np.concatenate(
        [sf.read(c, dtype="float32", always_2d=True)[0].mean(axis=1) for c in clips]
    )
    rng = np.random.default_rng(7)
    total = int(seconds * rate)
    with sf.SoundFile(path, "w", rate, 1, subtype="PCM_16", format="FLAC") as out:
        written = 0
        while written < total:
            chunk = base[: total - written]
            out.write(chunk + rng.normal(0.0, 0.003, chunk.shape[0]).astype(np.float32))
            written += chunk.shape[0]
    return path


class Moto:
    """A moto server plus, per job, fresh buckets and a notified queue with a DLQ."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.s3 = self.client("s3")
        self.sqs = self.client("sqs")

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def job(self, visibility_s: int = 120) -> dict[str, str]:
        tag = uuid.uuid4().hex[:10]
        names = {"in": f"bench-in-{tag}", "out": f"bench-out-{tag}"}
        for bucket in names.values():
            self.s3.create_bucket(
                Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
            )
        dlq = self.sqs.create_queue(QueueName=f"bench-dlq-{tag}")["QueueUrl"]
        dlq_arn = self._arn(dlq)
        policy = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "3"})
        queue = self.sqs.create_queue(
            QueueName=f"bench-jobs-{tag}",
            Attributes={"RedrivePolicy": policy, "VisibilityTimeout": str(visibility_s)},
        )["QueueUrl"]
        rule = {"Name": "prefix", "Value": PREFIX}
        self.s3.put_bucket_notification_configuration(
            Bucket=names["in"],
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": self._arn(queue),
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {"Key": {"FilterRules": [rule]}},
                    }
                ]
            },
        )
        return {**names, "queue": queue, "visibility": str(visibility_s)}

    def _arn(self, url: str) -> str:
        attrs = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attrs["Attributes"]["QueueArn"])

    def put(self, bucket: str, key: str, path: Path) -> None:
        with path.open("rb") as body:  # one PUT: one event (moto notifies multipart twice)
            self.s3.put_object(Bucket=bucket, Key=key, Body=body)

    def stop(self) -> None:
        self.server.stop()


def worker_env(moto: Moto, job: dict[str, str], threads: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEVENSENSE_", "AWS_"))}
    env.update(
        AWS_ENDPOINT_URL=moto.endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        BENTOML_DO_NOT_TRACK="true",
        SEVENSENSE_INFERENCE__PROVIDERS='["cpu"]',
        SEVENSENSE_INFERENCE__INTRA_THREADS=str(threads or 0),
        SEVENSENSE_BATCH_QUEUE_URL=job["queue"],
        SEVENSENSE_INPUT_BUCKET=job["in"],
        SEVENSENSE_OUTPUT_BUCKET=job["out"],
        SEVENSENSE_VISIBILITY_TIMEOUT_S=job["visibility"],
        SEVENSENSE_WORKER__WAIT_TIME_S="1",
        SEVENSENSE_WORKER__METRICS_PORT="0",
    )
    return env


def vm_hwm_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_worker(env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run ``sevensense worker --once`` and watch its VmHWM until it exits. ``moto_cpu_s`` is
    this process's CPU time meanwhile: moto serving the worker (the watcher costs ~nothing)."""
    start = time.perf_counter()
    cpu = time.process_time()
    proc = subprocess.Popen(
        [str(SEVENSENSE), "worker", "--once", "--queues", "batch", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak: list[float] = [0.0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            value = vm_hwm_mb(proc.pid)
            if value is not None:
                peak[0] = max(peak[0], value)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = proc.communicate(timeout=1800)
    done.set()
    watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed ({proc.returncode}):\n{err[-3000:]}")
    summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    summary["process_wall_s"] = time.perf_counter() - start
    summary["moto_cpu_s"] = time.process_time() - cpu
    summary["peak_rss_mb"] = peak[0]
    return summary


def run_cli(files: list[Path], out: Path, threads: int | None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEVENSENSE_")}
    env.update(
        SEVENSENSE_INFERENCE__PROVIDERS='["cpu"]',
        SEVENSENSE_INFERENCE__INTRA_THREADS=str(threads or 0),
    )
    start = time.perf_counter()
    proc = subprocess.run(
        [str(SEVENSENSE), "embed", *map(str, files), "--out", str(out), "--quiet"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )
    line = proc.stdout.strip().splitlines()[-1]
    found = re.search(r"\(([\d.]+) s audio.* in ([\d.]+) s \[", line)
    assert found, line
    audio_s, wall_s = float(found[1]), float(found[2])
    return {
        "audio_s": audio_s,
        "busy_s": wall_s,
        "x_realtime": audio_s / wall_s,
        "process_wall_s": time.perf_counter() - start,
    }


def worker_job(moto: Moto, files: list[Path], threads: int | None, concurrency: int) -> Any:
    job = moto.job()
    for path in files:
        moto.put(job["in"], f"{PREFIX}job20/{path.parent.name}/{path.name}", path)
    result = run_worker(worker_env(moto, job, threads), "--concurrency", str(concurrency))
    assert result["outcomes"].get("done") == 20, result
    return result


def throughput(moto: Moto, tmp: Path, rounds: int, threads: int | None) -> dict[str, Any]:
    files = twenty_recordings()
    runs: dict[str, list[dict[str, Any]]] = {"cli": [], "worker_x1": [], "worker_x2": []}
    for i in range(rounds):
        runs["cli"].append(run_cli(files, tmp / f"cli-{i}.parquet", threads))
        runs["worker_x1"].append(worker_job(moto, files, threads, 1))
        runs["worker_x2"].append(worker_job(moto, files, threads, 2))
        print(
            f"  round {i + 1}: "
            + ", ".join(f"{k} {v[-1]['x_realtime']:.1f}x" for k, v in runs.items())
            + f" (moto CPU {runs['worker_x2'][-1]['moto_cpu_s']:.2f} s in the x2 run)",
            flush=True,
        )
    x = {k: statistics.median(r["x_realtime"] for r in v) for k, v in runs.items()}
    return {
        "files": len(files),
        "audio_s": runs["cli"][0]["audio_s"],
        "x_realtime": x,
        "ratio_x1": x["worker_x1"] / x["cli"],
        "ratio_x2": x["worker_x2"] / x["cli"],
        "moto_cpu_s": statistics.median(r["moto_cpu_s"] for r in runs["worker_x2"]),
        "worker_busy_s": statistics.median(r["busy_s"] for r in runs["worker_x2"]),
        "runs": runs,
    }


def memory(moto: Moto, tmp: Path, threads: int | None) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for label, seconds in (("10min", 600.0), ("2h", 7200.0)):
        path = real_long_recording(tmp / f"{label}.flac", seconds)
        job = moto.job(visibility_s=60)
        moto.put(job["in"], f"{PREFIX}{path.name}", path)
        result = run_worker(worker_env(moto, job, threads))
        assert result["outcomes"].get("done") == 1, result
        found[label] = {
            "object_mb": round(path.stat().st_size / 2**20, 1),
            "audio_s": result["audio_s"],
            "windows": result["windows"],
            "peak_rss_mb": round(result["peak_rss_mb"], 1),
            "x_realtime": result["x_realtime"],
        }
        path.unlink()
        print(f"  {label}: {found[label]}", flush=True)
    found["growth_mb"] = round(found["2h"]["peak_rss_mb"] - found["10min"]["peak_rss_mb"], 1)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="ORT intra-op threads (default: each side's auto)"
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    started = time.perf_counter()
    moto = Moto()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
            print("(a) 20 recordings: worker on moto vs the CLI on local files", flush=True)
            result: dict[str, Any] = {
                "throughput": throughput(moto, Path(tmp), args.rounds, args.threads)
            }
            print("(b) worker peak RSS: 10-minute vs 2-hour object", flush=True)
            result["memory"] = memory(moto, Path(tmp), args.threads)
    finally:
        moto.stop()
    result["wall_s"] = round(time.perf_counter() - started, 1)
    t, m = result["throughput"], result["memory"]
    x = t["x_realtime"]
    print(
        f"\nthroughput ({t['files']} files, {t['audio_s']:.0f} s audio, x real time): CLI "
        f"{x['cli']:.1f}x; worker, 1 message at a time {x['worker_x1']:.1f}x "
        f"(ratio {t['ratio_x1']:.2f}), 2 at a time {x['worker_x2']:.1f}x "
        f"(ratio {t['ratio_x2']:.2f}; target >= 0.9); moto, on the same cores, used "
        f"{t['moto_cpu_s']:.2f} CPU-s of the x2 run's {t['worker_busy_s']:.2f} s"
    )
    print(
        f"peak RSS: 10-min object {m['10min']['peak_rss_mb']:.0f} MB, 2-h object "
        f"{m['2h']['peak_rss_mb']:.0f} MB ({m['2h']['object_mb']:.0f} MB FLAC); "
        f"growth {m['growth_mb']:+.0f} MB"
    )
    print(f"benchmark wall time {result['wall_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
