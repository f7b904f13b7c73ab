"""What BirdNET verification costs ``/embed``: windows/s and latency at 32 users with
verify=false, with shadow sampling of 10 % of requests, and with verify=true.

    make load-verification   # or: .venv/bin/python -m load_tests.verification [--rounds 3]

Two service graphs are started as the tests start them (both with the Verifier service):
A with ``verification.sample_rate`` 0, B with 0.1. The steps run interleaved, round after
round: A verify=false, B verify=false (shadow), A verify=true, so slow drifts of this
machine's speed hit every mode alike; between steps B's shadow queue is left to drain, so
shadow work never spills into another mode's step. Each step is a closed-loop Locust run of
``load_tests.run`` (same clips, same metrics). The primary model is the Perch-contract
model: verifying BirdNET against itself is trivial and costs nothing.

The check: p99 with shadow sampling within 5 % of p99 without (shadow verification is off
the latency path). On one small host the Verifier's BirdNET shares the cores with the
embedding model, so the throughput cost of shadow work shows here; in AWS it has its own.
"""

from __future__ import annotations

import locust  # noqa: F401  first: gevent must patch sockets before anything opens one

# isort: split

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psutil

from load_tests.locustfile import EmbedUser
from load_tests.run import OUT, run_step
from load_tests.server import REPO, Service, base_env, free_port, samples
from sevensense.serving.access.keys import generate_key, hash_key

MODEL = "perch-contract:1.0.0"
MODES = ("off", "shadow", "verify")
P99_TOLERANCE = 0.05


def start(models: Path, key: str, rate: float, stack: ExitStack) -> Service:
    state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="7s-verify-")))
    records: list[dict[str, object]] = [
        {"id": "load", "sha256": hash_key(key), "scopes": ["embed", "read"]}
    ]
    env = base_env(
        models,
        state,
        records,
        SEVENSENSE_SERVING__DEFAULT_MODEL=MODEL.split(":", maxsplit=1)[0],
        SEVENSENSE_VERIFICATION__ENABLE_BIRDNET="true",
        SEVENSENSE_VERIFICATION__SAMPLE_RATE=str(rate),
    )
    return Service(free_port(), env, state / "server.log", {"load": key})


def verification_counts(service: Service, key: str) -> dict[str, float]:
    text = httpx.get(f"{service.url}/metrics", headers={"X-API-Key": key}, timeout=30).text
    counts: dict[str, float] = {}
    for labels, value in samples(text, "sevensense_verification_windows_total"):
        counts[labels["outcome"]] = counts.get(labels["outcome"], 0.0) + value
    return counts


def drain(service: Service, timeout_s: float = 60.0) -> float:
    """Wait until the shadow queue is empty; seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        detail = httpx.get(f"{service.url}/readyz", params={"detail": 1}, timeout=10).json()
        if detail["verifier"]["shadow_queue"]["held_windows"] == 0:
            break
        time.sleep(0.5)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured, per step")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--models-dir", type=Path, default=REPO / "models")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    key = generate_key()
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "model": MODEL,
        "users": args.users,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "steps": [],
    }
    with ExitStack() as stack:
        plain = start(args.models_dir, key, 0.0, stack)
        shadow = start(args.models_dir, key, 0.1, stack)
        print("[verify] starting two service graphs", file=sys.stderr)
        threads = [threading.Thread(target=s.start) for s in (plain, shadow)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for s in (plain, shadow):
            if s.proc is None or s.proc.poll() is not None or not s.startup_s:
                raise SystemExit(f"a service did not start:\n{s.log_tail()}")
            stack.callback(s.stop)
        counts_before = verification_counts(shadow, key)
        for r in range(args.rounds):
            for mode in MODES:
                service = shadow if mode == "shadow" else plain
                EmbedUser.extra = (("verify", "true"),) if mode == "verify" else ()
                print(f"[verify] round {r + 1}: {mode}", file=sys.stderr)
                assert service.proc is not None
                step = run_step(
                    service.url,
                    key,
                    args.users,
                    args.seconds,
                    args.warmup,
                    MODEL,
                    psutil.Process(service.proc.pid),
                )
                step["mode"], step["round"] = mode, r + 1
                if mode == "shadow":
                    step["drain_s"] = drain(shadow)
                result["steps"].append(step)
        counts_after = verification_counts(shadow, key)
    result["shadow_windows"] = {k: v - counts_before.get(k, 0.0) for k, v in counts_after.items()}
    summary: dict[str, dict[str, float]] = {}
    for mode in MODES:
        steps = [s for s in result["steps"] if s["mode"] == mode]
        summary[mode] = {
            "windows_per_s": statistics.median(s["cpu_path"]["windows_per_s"] for s in steps),
            "p50_ms": statistics.median(s.get("p50_ms", float("nan")) for s in steps),
            "p99_ms": statistics.median(s.get("p99_ms", float("nan")) for s in steps),
            "failures": sum(sum(s["failures"].values()) for s in steps),
            "other_cores": statistics.median(
                s["host_busy_cores"] - s["client_cores"] - (s["server_cores"] or 0.0) for s in steps
            ),
        }
    result["summary"] = summary
    ratio = summary["shadow"]["p99_ms"] / summary["off"]["p99_ms"]
    result["p99_shadow_over_off"] = ratio
    result["p99_within_tolerance"] = abs(ratio - 1.0) <= P99_TOLERANCE
    print(
        f"mode     windows/s   p50 ms   p99 ms  failures  other cores"
        f"   ({args.users} users, {MODEL}, median of {args.rounds} rounds)"
    )
    for mode, row in summary.items():
        print(
            f"{mode:<8} {row['windows_per_s']:>9.1f} {row['p50_ms']:>8.0f} {row['p99_ms']:>8.0f}"
            f" {row['failures']:>9.0f} {row['other_cores']:>12.2f}"
        )
    rounds = [
        (r["p99_ms"], o["p99_ms"])
        for r, o in zip(
            [s for s in result["steps"] if s["mode"] == "shadow"],
            [s for s in result["steps"] if s["mode"] == "off"],
            strict=True,
        )
    ]
    print("p99 shadow / off per round: " + ", ".join(f"{a / b:.2f}" for a, b in rounds))
    if max(row["other_cores"] for row in summary.values()) > 0.25:
        print("other processes used over 0.25 core during the steps: latency figures are noisy")
    print(
        f"p99 shadow / off: {ratio:.3f} (within {P99_TOLERANCE:.0%}: "
        f"{result['p99_within_tolerance']}); shadow windows by outcome: "
        f"{json.dumps(result['shadow_windows'])}"
    )
    path = args.json or OUT / f"verification_{result['date']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"[verify] wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
