"""HTTP load benchmark of the service graph: start-up time, then closed-loop Locust steps.

    make load     # or: .venv/bin/python -m load_tests.run [--url URL --key KEY]
                  #        [--users 1,8,32] [--seconds 30] [--model birdnet-v2.4]

Without ``--url`` it starts ``bentoml serve`` itself (free port, temporary state directory,
a generated key) and measures start-up: process start to the first 200 from ``/readyz``.

Each step runs ``--users`` Locust users posting 5-s clips back to back: a warm-up, so the
batcher reaches its steady state, then ``--seconds`` measured. ``/metrics`` is read at both
ends of the measured interval, so windows/s and batch sizes are the service's own counts
over the same interval as the client's latencies. The engine's best offline batch
throughput (same model, all cores in one session, batches of 8/16/32) is measured in a
subprocess while the service is idle; the service's windows/s at the highest concurrency
is reported as a fraction of it (target >= 0.8).

Locust, the gateway and the model services share this host's cores (two here), so every
CPU-second the client spends is one the service did not get: both are reported per step.
"""

from __future__ import annotations

import locust  # noqa: F401  first: gevent must patch sockets before anything opens one

# isort: split

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import psutil
from locust.env import Environment

from load_tests.locustfile import KEY_ENV, EmbedUser, clips
from load_tests.server import OUT, REPO, Service, base_env, free_port
from load_tests.stats import CpuPath, cpu_s, host_busy_s, latency_stats
from sevensense.serving.access.keys import generate_key, hash_key

TARGET_RATIO = 0.8


@dataclass
class Recorder:
    """Every request Locust reports while ``active``: latencies of successes, failures by
    name (``/embed [<status> <code>]``) with one message each."""

    active: bool = False
    latencies_ms: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    messages: dict[str, str] = field(default_factory=dict)

    def on_request(
        self, name: str, response_time: float, exception: BaseException | None, **_: Any
    ) -> None:
        if not self.active:
            return
        if exception is None:
            self.latencies_ms.append(response_time)
        else:
            self.failures[name] += 1
            self.messages.setdefault(name, str(exception)[:300])


def run_step(
    url: str,
    key: str,
    users: int,
    seconds: float,
    warmup_s: float = 5.0,
    model: str | None = None,
    server: psutil.Process | None = None,
    path: str = "cpu",
) -> dict[str, Any]:
    """One closed-loop step of ``users`` EmbedUsers; its figures as a JSON-ready dict.
    ``path``: the model service whose counters are read ("gpu" on a GPU host)."""
    os.environ[KEY_ENV] = key
    EmbedUser.model = model
    clips()  # cut the clips before any clock starts
    recorder = Recorder()
    env = Environment(user_classes=[EmbedUser], host=url, stop_timeout=60.0)
    env.events.request.add_listener(recorder.on_request)
    runner = env.create_local_runner()
    me = psutil.Process()
    runner.start(users, spawn_rate=100.0)
    gevent.sleep(warmup_s)
    started = time.perf_counter()
    before = CpuPath.read(url, key, model or "", path)
    cpu_client, cpu_server, cpu_host = cpu_s(me, tree=False), cpu_s(server), host_busy_s()
    recorder.active = True
    gevent.sleep(seconds)
    recorder.active = False
    elapsed = time.perf_counter() - started
    after = CpuPath.read(url, key, model or "", path)
    client_s = sum(cpu_s(me, tree=False).values()) - sum(cpu_client.values())
    server_s = {k: v - cpu_server.get(k, 0.0) for k, v in cpu_s(server).items()}
    cpu_host = host_busy_s() - cpu_host
    runner.stop()
    runner.quit()
    ok = len(recorder.latencies_ms)
    failed = sum(recorder.failures.values())
    return {
        "users": users,
        "seconds": elapsed,
        "requests": ok + failed,
        "ok": ok,
        "requests_per_s": (ok + failed) / elapsed,
        "ok_per_s": ok / elapsed,
        **(latency_stats(recorder.latencies_ms) if ok else {}),
        "failures": dict(recorder.failures),
        "failure_messages": recorder.messages,
        "user_errors": len(runner.exceptions),
        "cpu_path": after.since(before, elapsed),  # the ``path`` service's counters
        "path": path,
        "client_cores": client_s / elapsed,
        "server_cores": sum(server_s.values()) / elapsed if server is not None else None,
        "server_cores_by_service": {k: v / elapsed for k, v in server_s.items()},
        "host_busy_cores": cpu_host / elapsed,
    }


def engine_throughput(model: str, threads: int, models_dir: Path, env: dict[str, str]) -> Any:
    """In a subprocess: this one is monkey-patched by gevent."""
    out = subprocess.run(
        [
            sys.executable,
            *("-m", "load_tests.engine", "--model", model, "--threads", str(threads)),
            *("--models-dir", str(models_dir)),
        ],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(result: dict[str, Any]) -> str:
    def fmt(value: Any, width: int, digits: int = 0) -> str:
        text = "-" if value is None else f"{value:.{digits}f}"
        return text.rjust(width)

    lines = [
        "users  req/s   p50 ms   p90 ms   p99 ms  fails  windows/s  batch mean  batch max"
        "  session busy  client cores  server cores  host busy"
    ]
    for s in result["steps"]:
        cpu = s["cpu_path"]
        bounds = cpu["batch_max_bucket"]
        lines.append(
            f"{s['users']:>5}  {s['requests_per_s']:>5.1f}  {fmt(s.get('p50_ms'), 7)}"
            f"  {fmt(s.get('p90_ms'), 7)}  {fmt(s.get('p99_ms'), 7)}"
            f"  {sum(s['failures'].values()):>5}  {cpu['windows_per_s']:>9.1f}"
            f"  {cpu['batch_mean']:>10.1f}"
            f"  {(f'{bounds[0]:g}<b<={bounds[1]:g}' if bounds else '-'):>9}"
            f"  {cpu['session_busy']:>12.2f}  {s['client_cores']:>12.2f}"
            f"  {fmt(s['server_cores'], 12, 2)}  {s['host_busy_cores']:>9.2f}"
        )
    for s in result["steps"]:
        for name, count in s["failures"].items():
            lines.append(f"  users={s['users']}: {count} x {name}: {s['failure_messages'][name]}")
        if s["server_cores_by_service"]:
            split = ", ".join(f"{k} {v:.2f}" for k, v in s["server_cores_by_service"].items())
            lines.append(f"  users={s['users']}: server cores by service: {split}")
        other = s["host_busy_cores"] - s["client_cores"] - (s["server_cores"] or 0.0)
        if s["server_cores"] is not None and other > 0.25:
            lines.append(f"  users={s['users']}: other processes used {other:.2f} cores: noisy")
    if result.get("startup_s") is not None:
        lines.append(f"start-up (process start -> /readyz 200): {result['startup_s']:.1f} s")
    engine = result.get("engine")
    if engine:
        per = ", ".join(f"b{n} {v:.1f}" for n, v in engine["windows_per_s"].items())
        lines.append(
            f"engine offline ({engine['threads']} threads): best {engine['best_windows_per_s']:.1f}"
            f" windows/s at batch {engine['best_batch']} ({per}); the idle service used"
            f" {engine['server_cores_meanwhile']:.2f} cores meanwhile"
        )
    if result.get("ratio") is not None:
        lines.append(
            f"service / engine at {result['ratio_users']} users: {result['ratio']:.2f}x "
            f"(target >= {TARGET_RATIO})"
        )
    lines.append(result["note"])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="a running service; default: start one here")
    parser.add_argument("--key", help="API key with the embed scope (with --url)")
    parser.add_argument("--users", default="1,8,32", help="concurrency of each step")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured, per step")
    parser.add_argument("--warmup", type=float, default=5.0, help="per step, before measuring")
    parser.add_argument("--model", default="birdnet-v2.4")
    parser.add_argument(
        "--threads", type=int, default=2, help="ORT threads of the offline engine measurement"
    )
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra settings for the started service and the engine run, e.g. "
        "SEVENSENSE_SERVING__CPU_MAX_LATENCY_MS=2000 (repeatable)",
    )
    parser.add_argument("--no-engine", action="store_true", help="skip the offline yardstick")
    parser.add_argument(
        "--path", choices=("cpu", "gpu"), default="cpu", help="model service whose counters count"
    )
    parser.add_argument("--json", type=Path, default=None, help="default: out/bench/load_<date>")
    args = parser.parse_args()
    if args.url and not args.key:
        parser.error("--url needs --key")
    users = [int(u) for u in args.users.split(",")]
    extra = dict(item.split("=", 1) for item in args.env)
    cores = os.cpu_count() or 1
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "model": args.model,
        "threads": args.threads,
        "cores": cores,
        "users": users,
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "env": extra,
        "note": f"Locust, the gateway and the model services share this host's {cores} cores.",
    }
    with ExitStack() as stack:
        server: psutil.Process | None = None
        if args.url:
            url, key = args.url.rstrip("/"), args.key
            result["startup_s"] = None
        else:
            state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="7s-load-")))
            key = generate_key()
            records: list[dict[str, object]] = [
                {"id": "load", "sha256": hash_key(key), "scopes": ["embed", "read"]}
            ]
            env = base_env(
                args.models_dir,
                state,
                records,
                **{
                    "SEVENSENSE_SERVING__DEFAULT_MODEL": args.model,
                    **extra,  # --env wins
                },
            )
            service = Service(free_port(), env, state / "server.log", {"load": key})
            print(f"[load] starting the service on port {service.port}", file=sys.stderr)
            service.start()
            stack.callback(service.stop)
            assert service.proc is not None
            server = psutil.Process(service.proc.pid)
            url = service.url
            result["startup_s"] = service.startup_s
            print(f"[load] ready after {service.startup_s:.1f} s", file=sys.stderr)
        if not args.no_engine:
            print("[load] engine offline throughput (service idle)", file=sys.stderr)
            engine_env = {"SEVENSENSE_PROFILE": "default", **extra}
            idle_before, started = sum(cpu_s(server).values()), time.perf_counter()
            engine = engine_throughput(args.model, args.threads, args.models_dir, engine_env)
            idle_s = sum(cpu_s(server).values()) - idle_before
            engine["server_cores_meanwhile"] = idle_s / (time.perf_counter() - started)
            result["engine"] = engine
        steps = []
        for n in users:
            print(f"[load] {n} users: {args.warmup:g} + {args.seconds:g} s", file=sys.stderr)
            steps.append(
                run_step(url, key, n, args.seconds, args.warmup, args.model, server, args.path)
            )
        result["steps"] = steps
    top = max(steps, key=lambda s: s["users"])
    result["ratio_users"] = top["users"]
    result["ratio"] = (
        top["cpu_path"]["windows_per_s"] / result["engine"]["best_windows_per_s"]
        if "engine" in result
        else None
    )
    print(table(result))
    path = args.json or OUT / f"load_{result['date']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"[load] wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
