"""The front door under abuse: what unauthenticated and crawling uploads cost everyone else.

    make load-front-door   # or: .venv/bin/python -m load_tests.front_door [--crawlers 32]

Starts the service graph (as the tests do), then in one run:

1. baseline: the latency of well-behaved ``/embed`` requests (3-s clip), one after another;
2. under abuse: the same requests while ``--crawlers`` uploads with a valid key send one
   byte every 2 s and ``--intruders`` uploads of 60 MB with no key are sent at 2 MB/s,
   again and again;
3. reports the ratio of the well-behaved median and p95 latency under abuse to the baseline,
   how fast intruders are refused and how much of their body they got to send, and when the
   crawlers were cut.

Loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from load_tests.raw_http import MULTIPART, Answer, upload
from load_tests.server import REPO, Service, base_env, free_port
from sevensense.serving.access.keys import generate_key, hash_key

CLIP = REPO.parent / "shared" / "audio" / "birdnet_sample_3s_48k.wav"
MiB = 1024 * 1024


def embed_once(service: Service) -> float:
    started = time.perf_counter()
    with service.client("partner") as c:
        response = c.post(
            "/embed",
            files={"audio": ("clip.wav", CLIP.read_bytes(), "audio/wav")},
            data={"top_k": "1"},
        )
    response.raise_for_status()
    return time.perf_counter() - started


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=30, help="well-behaved, per phase")
    parser.add_argument("--crawlers", type=int, default=16)
    parser.add_argument("--intruders", type=int, default=8)
    parser.add_argument("--window-s", type=float, default=5.0, help="upload_window_s")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="front-door-bench-") as tmp:
        state = Path(tmp)
        keys = {"partner": generate_key(), "crawler": generate_key()}
        records: list[dict[str, object]] = [
            {"id": k, "sha256": hash_key(v), "scopes": ["embed", "read"]} for k, v in keys.items()
        ]
        env = base_env(
            REPO / "models",
            state,
            records,
            SEVENSENSE_SERVING__MAX_UPLOAD_MB="100",
            SEVENSENSE_SERVING__FRONT_DOOR__UPLOAD_WINDOW_S=str(args.window_s),
            SEVENSENSE_SERVING__FRONT_DOOR__MAX_UPLOADS_PER_KEY=str(args.crawlers + 1),
        )
        service = Service(free_port(), env, state / "server.log", keys)
        service.start()
        try:
            for _ in range(3):
                embed_once(service)
            baseline = [embed_once(service) for _ in range(args.requests)]

            stop = threading.Event()
            intruder_answers: list[Answer] = []
            crawler_answers: list[Answer] = []

            def intrude() -> None:
                while not stop.is_set():
                    intruder_answers.append(
                        upload(service.port, dict(MULTIPART), total=60 * MiB, rate_bps=2 * MiB)
                    )

            def crawl() -> None:
                headers = {"X-API-Key": keys["crawler"], **MULTIPART}
                crawler_answers.append(
                    upload(service.port, headers, total=10 * MiB, rate_bps=0.5, chunk=1)
                )

            with ThreadPoolExecutor(args.crawlers + args.intruders) as pool:
                crawlers = [pool.submit(crawl) for _ in range(args.crawlers)]
                intruders = [pool.submit(intrude) for _ in range(args.intruders)]
                time.sleep(0.5)
                abused = [embed_once(service) for _ in range(args.requests)]
                stop.set()
                for f in [*crawlers, *intruders]:
                    f.result()
            ready = httpx.get(f"{service.url}/readyz", timeout=10).status_code
        finally:
            service.stop()

    refused = [a for a in intruder_answers if a.status == 401]
    cut = [a for a in crawler_answers if a.status == 408]
    report = {
        "well_behaved": {
            "baseline_median_s": round(statistics.median(baseline), 4),
            "abused_median_s": round(statistics.median(abused), 4),
            "median_ratio": round(statistics.median(abused) / statistics.median(baseline), 3),
            "baseline_p95_s": round(p95(baseline), 4),
            "abused_p95_s": round(p95(abused), 4),
            "p95_ratio": round(p95(abused) / p95(baseline), 3),
        },
        "intruders_60MB_no_key": {
            "uploads": len(intruder_answers),
            "refused_401": len(refused),
            "median_answer_s": round(statistics.median(a.elapsed_s for a in refused), 4),
            "max_bytes_sent": max(a.sent for a in refused),
        },
        "crawlers_1_byte_per_2s": {
            "uploads": len(crawler_answers),
            "cut_408": len(cut),
            "median_cut_s": round(statistics.median(a.elapsed_s for a in cut), 3),
            "window_s": args.window_s,
        },
        "ready_after": ready == 200,
    }
    print(json.dumps(report, indent=2))
    w = report["well_behaved"]
    print(
        f"\nwell-behaved /embed under abuse vs alone: median {w['median_ratio']}x, "
        f"p95 {w['p95_ratio']}x; {len(refused)} no-key 60 MB uploads refused in "
        f"{report['intruders_60MB_no_key']['median_answer_s']} s (median), "
        f"{len(cut)}/{len(crawler_answers)} crawlers cut at "
        f"{report['crawlers_1_byte_per_2s']['median_cut_s']} s (window {args.window_s} s)"
    )


if __name__ == "__main__":
    main()
