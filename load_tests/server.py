"""A real `bentoml serve` process group on 127.0.0.1, for the HTTP tests and the load runs.

One implementation for both, so that the benchmark measures the service exactly as the tests
start it. This module must not import Locust: pytest imports it through the test fixtures,
and importing Locust monkey-patches the whole interpreter with gevent.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "out" / "bench"  # where the load tests and benchmarks write their reports


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called ``name`` in a Prometheus exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(
    models: Path, state: Path, records: list[dict[str, object]], **extra: str
) -> dict[str, str]:
    """Settings for a throw-away server: its own state and BentoML home, the given hashed
    keys, two ORT threads (these hosts have two cores), limits high enough not to meter."""
    env = {
        "BENTOML_DO_NOT_TRACK": "true",
        "BENTOML_HOME": str(state / "bentoml"),
        "SEVENSENSE_PROFILE": "default",
        "SEVENSENSE_MODELS_DIR": str(models),
        "SEVENSENSE_INFERENCE__INTRA_THREADS": "2",
        "SEVENSENSE_SERVING__STATE_DIR": str(state),
        "SEVENSENSE_SERVING__API_KEYS": json.dumps(records),
        "SEVENSENSE_SERVING__MAX_UPLOAD_MB": "5",
        "SEVENSENSE_SERVING__MAX_AUDIO_S": "600",
        "SEVENSENSE_SERVING__RATE_LIMIT_PER_S": "1000",
        "SEVENSENSE_SERVING__RATE_LIMIT_BURST": "2000",
        # The Verifier (BirdNET, one more process) only where a test or run asks for it.
        "SEVENSENSE_VERIFICATION__ENABLE_BIRDNET": "false",
    }
    env.update(extra)
    return env


@dataclass
class Service:
    """One `bentoml serve` process group and a client for it."""

    port: int
    env: dict[str, str]
    log_path: Path
    keys: dict[str, str] = field(default_factory=dict)
    target: str = "sevensense.serving.service:Entry"
    proc: subprocess.Popen[bytes] | None = None
    startup_s: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180.0) -> None:
        """Returns once /readyz answers 200; ``startup_s`` is process start to that answer."""
        log = self.log_path.open("wb")
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "bentoml"),
                "serve",
                self.target,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=REPO,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited early:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    self.startup_s = time.perf_counter() - started
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"service not ready after {timeout_s} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log_tail(self, n: int = 60) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def client(self, key: str | None = "partner", timeout: float = 120.0) -> httpx.Client:
        headers = {"X-API-Key": self.keys[key]} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
