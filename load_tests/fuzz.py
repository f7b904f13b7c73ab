"""Structure-aware audio fuzzing of the CLI and ``POST /embed`` (issue 27).

    make fuzz                    # N=300: ~5 min on 2 cores
    .venv/bin/python -m load_tests.fuzz --n 2000 --json out.json
    .venv/bin/python -m load_tests.fuzz --code /tmp/base/service   # an older checkout

Writes issue 27's named files and ``--n`` mutants (``load_tests/audio_mutants.py``) to a
temporary directory, then runs every file through

- the CLI: ``--clients`` worker processes doing what ``sevensense embed`` does per file
  (``load_tests/fuzz_cli.py``), each file's CPU time and peak-RSS rise measured; a file
  over ``--timeout`` s kills its worker (outcome ``timeout``), and a new one takes over;
- HTTP: a service started as the tests start it, ``--clients`` concurrent uploads under the
  file's name; then the ``--replay`` slowest files again one at a time, each one's CPU time
  (the whole process tree's) and RSS rise measured.

Prints one JSON report: outcome classes per face, 5xx, dropped connections, max latency,
RSS before/after, the most any one input cost, and the files whose outcome differs between
the CLI and HTTP. Every process it starts is capped at ``--as-cap-gb`` of address space
(the old code's amplification would otherwise take the machine's memory).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from load_tests.audio_mutants import mutants, named_cases
from load_tests.server import REPO, Service, base_env, free_port
from sevensense.serving.access.keys import generate_key, hash_key


def tree_stats(root: int) -> tuple[float, float]:
    """(RSS MB, CPU s) of a process and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    rss = cpu = 0.0
    todo, tick, page = [root], os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page / 2**20
            cpu += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return rss, cpu


# --- the CLI -------------------------------------------------------------------------------


@dataclass
class CliWorker:
    env: dict[str, str]
    timeout_s: float
    proc: subprocess.Popen[str] | None = None
    start_rss_mb: float = 0.0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "load_tests.fuzz_cli"],
            cwd=REPO,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        ready = self._line(300.0)
        if ready is None:
            raise RuntimeError("CLI worker did not start")
        self.start_rss_mb = float(json.loads(ready)["rss_mb"])

    def _line(self, timeout: float) -> str | None:
        assert self.proc is not None and self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                return None
        line = self.proc.stdout.readline()
        return line or None

    def run(self, path: Path) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        started = time.perf_counter()
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        line = self._line(self.timeout_s)
        if line is None:
            crashed = self.proc.poll() is not None
            self.stop()
            outcome = "crashed" if crashed else "timeout"
            wall = time.perf_counter() - started
            return {"name": path.name, "outcome": outcome, "cpu_s": wall, "wall_s": wall}
        return dict(json.loads(line))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def run_cli(
    files: list[Path], env: dict[str, str], clients: int, timeout_s: float
) -> dict[str, Any]:
    workers = [CliWorker(env, timeout_s) for _ in range(clients)]
    for w in workers:
        w.start()
    baseline = max(w.start_rss_mb for w in workers)
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    queue = list(files)

    def loop(worker: CliWorker) -> None:
        while True:
            with lock:
                if not queue:
                    return
                path = queue.pop()
            answer = worker.run(path)
            with lock:
                results.append(answer)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(loop, workers))
    last = [r for r in results if "rss_mb" in r]
    report = summarise(results)
    report["rss_mb_before"] = round(baseline)
    report["rss_mb_after"] = round(max((r["rss_mb"] for r in last[-clients:]), default=0.0))
    report["rss_mb_max_resident"] = round(max((r["rss_mb"] for r in last), default=0.0))
    worst_rss = max(last, key=lambda r: r["peak_rise_mb"], default=None)
    if worst_rss is not None:
        report["max_peak_rise_mb"] = {
            "mb": round(worst_rss["peak_rise_mb"]),
            "file": worst_rss["name"],
        }
    for w in workers:
        w.stop()
    return report | {"outcomes_by_file": {r["name"]: r["outcome"] for r in results}}


# --- HTTP ----------------------------------------------------------------------------------


def start_service(env: dict[str, str], state: Path) -> Service:
    keys = {"fuzz": generate_key()}
    records: list[dict[str, object]] = [
        {"id": "fuzz", "sha256": hash_key(keys["fuzz"]), "scopes": ["embed", "read"]}
    ]
    models = REPO / "models"
    extra = {k: v for k, v in env.items() if k.startswith("SEVENSENSE_") or k == "PYTHONPATH"}
    service = Service(
        free_port(), base_env(models, state, records, **extra), state / "server.log", keys
    )
    service.start()
    return service


def upload(client: httpx.Client, path: Path) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        response = client.post("/embed", files={"audio": (path.name, path.read_bytes())})
    except httpx.TransportError as exc:
        return {
            "name": path.name,
            "outcome": "dropped",
            "wall_s": time.perf_counter() - started,
            "error": str(exc),
        }
    wall = time.perf_counter() - started
    if response.status_code == 200:
        outcome = "ok"
    else:
        try:
            outcome = str(response.json()["error"]["code"])
        except (ValueError, KeyError, TypeError):
            outcome = f"http_{response.status_code}"
    return {"name": path.name, "outcome": outcome, "status": response.status_code, "wall_s": wall}


def run_http(files: list[Path], env: dict[str, str], clients: int, replay: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fuzz-state-") as state:
        service = start_service(env, Path(state))
        try:
            assert service.proc is not None
            pid = service.proc.pid
            with service.client("fuzz", timeout=300.0) as c:  # warm: models loaded, pools up
                upload(c, files[0])
            rss_before, _ = tree_stats(pid)
            peak = [rss_before]
            done = threading.Event()

            def sample() -> None:
                while not done.wait(0.25):
                    peak[0] = max(peak[0], tree_stats(pid)[0])

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            clients_ = [service.client("fuzz", timeout=300.0) for _ in range(clients)]
            queue = list(files)
            lock = threading.Lock()
            results: list[dict[str, Any]] = []

            def loop(client: httpx.Client) -> None:
                while True:
                    with lock:
                        if not queue:
                            return
                        path = queue.pop()
                    answer = upload(client, path)
                    with lock:
                        results.append(answer)

            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(loop, clients_))
            done.set()
            sampler.join()
            time.sleep(2.0)
            rss_after, _ = tree_stats(pid)
            # The slowest files again, alone: what each one costs the service.
            slowest = sorted(results, key=lambda r: -float(r["wall_s"]))[:replay]
            by_name = {p.name: p for p in files}
            single = []
            with service.client("fuzz", timeout=300.0) as c:
                for r in slowest:
                    rss0, cpu0 = tree_stats(pid)
                    top = [rss0]
                    stop = threading.Event()

                    def watch(top: list[float] = top, stop: threading.Event = stop) -> None:
                        while not stop.wait(0.1):
                            top[0] = max(top[0], tree_stats(pid)[0])

                    t = threading.Thread(target=watch, daemon=True)
                    t.start()
                    answer = upload(c, by_name[r["name"]])
                    stop.set()
                    t.join()
                    rss1, cpu1 = tree_stats(pid)
                    single.append(
                        {
                            "file": r["name"],
                            "outcome": answer["outcome"],
                            "cpu_s": round(cpu1 - cpu0, 2),
                            "wall_s": round(answer["wall_s"], 2),
                            "rss_rise_mb": round(top[0] - rss0),
                            "rss_kept_mb": round(rss1 - rss0),
                        }
                    )
            for c in clients_:
                c.close()
        finally:
            service.stop()
    report = summarise(results)
    report["5xx"] = sum(1 for r in results if int(r.get("status", 0)) >= 500)
    report["dropped"] = sum(1 for r in results if r["outcome"] == "dropped")
    report["rss_mb_before"] = round(rss_before)
    report["rss_mb_after"] = round(rss_after)
    report["rss_mb_peak"] = round(peak[0])
    report["replayed_alone"] = single
    return report | {"outcomes_by_file": {r["name"]: r["outcome"] for r in results}}


# --- both ----------------------------------------------------------------------------------


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    cpu = [r for r in results if "cpu_s" in r]
    worst_cpu = max(cpu, key=lambda r: r["cpu_s"], default=None)
    slowest = max(results, key=lambda r: r["wall_s"], default=None)
    return {
        "files": len(results),
        "outcomes": dict(Counter(r["outcome"] for r in results).most_common()),
        "max_latency_s": round(slowest["wall_s"], 2) if slowest else 0.0,
        "max_latency_file": slowest["name"] if slowest else None,
        "max_cpu_s": {"s": round(worst_cpu["cpu_s"], 2), "file": worst_cpu["name"]}
        if worst_cpu
        else None,
    }


def write_corpus(root: Path, n: int, seed: int, limit_s: float) -> list[Path]:
    files = []
    for name, (data, _) in named_cases(limit_s).items():
        (root / name).write_bytes(data)
        files.append(root / name)
    for m in mutants(n, seed):
        (root / m.name).write_bytes(m.data)
        files.append(root / m.name)
    return files


def limit_as(gb: float) -> None:
    cap = int(gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))  # inherited by every process started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="mutants (plus the named files)")
    parser.add_argument("--seed", type=int, default=27)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--faces", default="cli,http")
    parser.add_argument("--timeout", type=float, default=120.0, help="per CLI file, seconds")
    parser.add_argument("--replay", type=int, default=8, help="slowest HTTP files re-sent alone")
    parser.add_argument(
        "--limit-s", type=float, default=3600.0, help="duration limit (the service's default)"
    )
    parser.add_argument(
        "--cli-limit-s", type=float, default=None, help="the CLI's; default --limit-s; 0 = none"
    )
    parser.add_argument("--named-only", action="store_true", help="only issue 27's named files")
    parser.add_argument("--as-cap-gb", type=float, default=6.0)
    parser.add_argument("--code", type=Path, default=None, help="service/ of the code to test")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    code = args.code or REPO / "service"
    env = {
        **os.environ,
        "PYTHONPATH": f"{code.resolve()}:{REPO}",
        "SEVENSENSE_MODELS_DIR": str(REPO / "models"),
        "SEVENSENSE_INFERENCE__INTRA_THREADS": "1",
        "SEVENSENSE_SERVING__MAX_AUDIO_S": str(args.limit_s),
        "SEVENSENSE_SERVING__MAX_UPLOAD_MB": "100",
        "SEVENSENSE_SERVING__REQUEST_TIMEOUT_S": "300",
    }
    cli_limit = args.limit_s if args.cli_limit_s is None else args.cli_limit_s
    if cli_limit:  # the CLI has no limit by default; the same one makes outcomes comparable
        env["SEVENSENSE_PREPROCESSING__MAX_DURATION_S"] = str(cli_limit)
    limit_as(args.as_cap_gb)
    report: dict[str, Any] = {"code": str(code), "n": args.n, "clients": args.clients}
    report["limits_s"] = {"http": args.limit_s, "cli": cli_limit or None}
    with tempfile.TemporaryDirectory(prefix="fuzz-corpus-") as tmp:
        files = write_corpus(Path(tmp), 0 if args.named_only else args.n, args.seed, args.limit_s)
        report["files"] = len(files)
        faces = args.faces.split(",")
        started = time.perf_counter()
        if "cli" in faces:
            report["cli"] = run_cli(files, env, args.clients, args.timeout)
        if "http" in faces:
            report["http"] = run_http(files, env, args.clients, args.replay)
        report["wall_s"] = round(time.perf_counter() - started)
    if "cli" in report and "http" in report:
        cli, http = report["cli"]["outcomes_by_file"], report["http"]["outcomes_by_file"]
        differ = {n: [cli[n], http.get(n)] for n in sorted(cli) if cli[n] != http.get(n)}
        report["disagreements"] = len(differ)
        report["disagreement_examples"] = dict(list(differ.items())[:20])
    report["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    for face in ("cli", "http"):
        report.get(face, {}).pop("outcomes_by_file", None)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
