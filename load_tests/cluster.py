"""A fleet on one machine, real parts: two entry processes, one CPU model service and one
BirdNET Verifier service (verify=true) that both reach by URL (as ECS services reach each
other), and HAProxy in front, round-robin with WebSockets, health-checking ``/readyz`` like
the ALB's target group.

    make fleet   # or: .venv/bin/python -m load_tests.cluster  (Ctrl-C stops it)

The tests (tests/serving/test_fleet.py) and the fleet load run (load_tests/fleet.py) start
it with this class. HAProxy is Debian's package; :func:`ensure_haproxy` installs it with
apt-get when it is missing and the process may (root on Debian, as CI runs).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from load_tests.server import REPO, Service, base_env, free_port
from sevensense.serving.access.keys import generate_key, hash_key

INSTALL_TIMEOUT_S = 600
# The ALB's health check, scaled down: a dead task leaves the rotation within ~1 s.
HAPROXY_CONFIG = """\
global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout tunnel 3600s
    retries 3
    option redispatch
frontend entry
    bind 127.0.0.1:{port}
    default_backend entries
backend entries
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server inter 300ms fall 2 rise 2
{servers}
"""


def ensure_haproxy() -> str:
    """The haproxy binary; installed from the distribution's packages when missing."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError("haproxy is not installed and apt-get is not usable (not root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "haproxy"],
    ):
        done = subprocess.run(
            command,
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {(done.stdout + done.stderr)[-800:]}")
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if not found:
        raise RuntimeError("apt-get installed haproxy but it is not on PATH")
    return found


@dataclass
class Fleet:
    """``models``: the models directory the services load from; ``state``: a scratch dir."""

    models: Path
    state: Path
    entries_n: int = 2
    extra_env: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    secret: str = field(default_factory=lambda: secrets.token_hex(32))
    cpu: Service | None = None
    verifier: Service | None = None
    entries: list[Service] = field(default_factory=list)
    port: int = 0
    haproxy: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _env(self, **extra: str) -> dict[str, str]:
        records: list[dict[str, object]] = [
            {
                "id": "partner",
                "sha256": hash_key(self.keys["partner"]),
                "scopes": ["embed", "read"],
            },
            {"id": "other", "sha256": hash_key(self.keys["other"]), "scopes": ["embed", "read"]},
        ]
        return base_env(self.models, self.state, records, **{**self.extra_env, **extra})

    def start(self) -> None:
        self.keys = self.keys or {k: generate_key() for k in ("partner", "other")}
        self.cpu = Service(
            free_port(),
            self._env(),
            self.state / "cpu.log",
            self.keys,
            target="sevensense.serving.service:CpuModel",
        )
        self.cpu.start()
        self.verifier = Service(
            free_port(),
            # A local fleet on a shared host: SCHED_IDLE (the default) could starve it.
            self._env(SEVENSENSE_VERIFICATION__CPU_PRIORITY="normal"),
            self.state / "verifier.log",
            self.keys,
            target="sevensense.serving.service:Verifier",
        )
        self.verifier.start()
        for i in range(self.entries_n):
            entry = Service(
                free_port(),
                self._env(
                    SEVENSENSE_SERVING__CPU_URL=self.cpu.url,
                    SEVENSENSE_VERIFICATION__ENABLE_BIRDNET="true",
                    SEVENSENSE_VERIFICATION__URL=self.verifier.url,
                    # No GPU here: its URL is a port nobody listens on (the path is absent).
                    SEVENSENSE_SERVING__GPU_URL=f"http://127.0.0.1:{free_port()}",
                    SEVENSENSE_SERVING__STREAM__RESUME_SECRET=self.secret,
                ),
                self.state / f"entry{i}.log",
                self.keys,
            )
            entry.start()
            self.entries.append(entry)
        self._start_haproxy()

    def _start_haproxy(self) -> None:
        binary = ensure_haproxy()
        self.port = free_port()
        servers = "\n".join(
            f"    server e{i} 127.0.0.1:{e.port} check" for i, e in enumerate(self.entries)
        )
        config = self.state / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(port=self.port, servers=servers))
        log = (self.state / "haproxy.log").open("wb")
        self.haproxy = subprocess.Popen(
            [binary, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("haproxy did not answer /readyz within 30 s")

    def kill(self, i: int) -> None:
        """SIGKILL every process of an entry, as a task dies without a word. BentoML's
        workers run in process groups of their own, so the group alone is not enough."""
        proc = self.entries[i].proc
        assert proc is not None
        main = psutil.Process(proc.pid)
        for p in [main, *main.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        proc.wait()

    def terminate(self, i: int) -> float:
        """SIGTERM an entry's main process, as ECS stops a task (the signal goes to the
        container's PID 1 alone), and wait: seconds until the whole task exited."""
        proc = self.entries[i].proc
        assert proc is not None
        started = time.perf_counter()
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)
        return time.perf_counter() - started

    def restart(self, i: int) -> None:
        entry = self.entries[i]
        if entry.log_path.exists():  # keep the stopped task's log beside the new one
            entry.log_path.rename(entry.log_path.with_suffix(f".{time.time_ns()}.log"))
        entry.start()

    def stop(self) -> None:
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
            self.haproxy.wait(timeout=10)
        for service in [*self.entries, self.cpu, self.verifier]:
            if service is not None:
                service.stop()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="sevensense-fleet-") as tmp:
        fleet = Fleet(REPO / "models", Path(tmp))
        try:
            fleet.start()
            print(f"fleet up: {fleet.url} (HAProxy) → entries", end=" ")
            print(
                ", ".join(e.url for e in fleet.entries),
                f"→ CPU model service {fleet.cpu and fleet.cpu.url}",
                f"and Verifier {fleet.verifier and fleet.verifier.url}",
            )
            print(f"API key (partner): {fleet.keys['partner']}", flush=True)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            fleet.stop()


if __name__ == "__main__":
    main()
