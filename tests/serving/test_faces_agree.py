"""One outcome per file whatever the face (issue 27): a corpus of hostile and extreme files
(issue 27's named files plus structure-aware mutants) through the CLI, ``POST /embed``,
``POST /detect`` and the S3 batch worker must give each file the same outcome class: ok, or
the same typed error. The live stream takes PCM, not containers: it must refuse the rates
the file faces refuse, with the same code. Then the short fuzz run of ``make fuzz``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote_plus

import numpy as np
import pytest

from load_tests.audio_mutants import mutants, named_cases
from load_tests.server import Service
from sevensense.audio.bounds import MIN_SAMPLE_RATE_HZ
from tests.conftest import MODELS, REPO
from tests.serving.test_stream import opening, session
from tests.worker.conftest import PREFIX, make_stack

LIMIT_S = 600.0  # the test server's serving.max_audio_s (load_tests/server.py)
SEVENSENSE = REPO / ".venv" / "bin" / "sevensense"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("corpus")
    files = {name: data for name, (data, _) in named_cases(LIMIT_S).items()}
    files.update({m.name: m.data for m in mutants(30, seed=2027)})
    for name, data in files.items():
        (root / name).write_bytes(data)
    return {name: root / name for name in files}


def cli_outcomes(corpus: dict[str, Path], tmp: Path) -> dict[str, str]:
    env_limit = {"SEVENSENSE_PREPROCESSING__MAX_DURATION_S": str(LIMIT_S)}
    run = subprocess.run(
        [str(SEVENSENSE), "embed", *map(str, corpus.values()), "--out", str(tmp / "o.parquet")],
        env={**os.environ, "SEVENSENSE_MODELS_DIR": str(MODELS), **env_limit},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode in (0, 1, 2), run.stderr[-3000:]
    failed = {
        Path(m.group(2)).name: m.group(3)
        for m in re.finditer(r"^(failed|partial): (.+?): \[(\w+)\]", run.stderr, re.M)
    }
    return {name: failed.get(name, "ok") for name in corpus}


def http_outcome(server: Service, route: str, path: Path) -> str:
    with server.client() as c:
        r = c.post(route, files={"audio": (path.name, path.read_bytes())})
    assert r.status_code < 500, (path.name, r.text)
    return "ok" if r.status_code == 200 else str(r.json()["error"]["code"])


def worker_outcomes(corpus: dict[str, Path], moto_endpoint: str, tmp: Path) -> dict[str, str]:
    stack = make_stack(moto_endpoint, tmp, max_receives=1)
    for name, path in corpus.items():
        stack.put(f"{PREFIX}{name}", path)
    env = stack.env(SEVENSENSE_PREPROCESSING__MAX_DURATION_S=str(LIMIT_S))
    rc, _, log = stack.run(env=env)
    assert rc == 0, log[-3000:]
    failed = {}
    for message in stack.dead_letters():
        attrs = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
        body = unquote_plus(message["Body"])
        found = [n for n in corpus if f'{PREFIX}{n}"' in body]
        assert len(found) == 1, message
        failed[found[0]] = attrs["failure_code"]
    return {name: failed.get(name, "ok") for name in corpus}


def test_every_face_gives_every_file_the_same_outcome(
    server: Service, corpus: dict[str, Path], moto_endpoint: str, tmp_path: Path
) -> None:
    faces = {
        "cli": cli_outcomes(corpus, tmp_path),
        "embed": {n: http_outcome(server, "/embed", p) for n, p in corpus.items()},
        "detect": {n: http_outcome(server, "/detect", p) for n, p in corpus.items()},
        "worker": worker_outcomes(corpus, moto_endpoint, tmp_path),
    }
    differ = {
        name: {face: got[name] for face, got in faces.items()}
        for name in corpus
        if len({got[name] for got in faces.values()}) > 1
    }
    assert differ == {}
    for name, (_, want) in named_cases(LIMIT_S).items():
        assert faces["cli"][name] == want, name
    classes = set(faces["cli"].values())
    assert "ok" in classes and len(classes) >= 4  # the corpus reaches several outcomes


@pytest.mark.parametrize("rate", [1, 3, MIN_SAMPLE_RATE_HZ - 1, 2_000_000])
def test_the_stream_refuses_the_rates_files_are_refused_at(server: Service, rate: int) -> None:
    frame = np.zeros(4000, "<i2").tobytes()
    received, code = session(server, [opening(rate), frame])
    assert code == 4422
    errors = [m for m in received if m["type"] == "error"]
    assert errors and errors[-1]["code"] == "unsupported_sample_rate", received


def test_the_short_fuzz_run() -> None:
    """``make fuzz`` in small: both faces, 4 clients, every outcome typed, no 5xx, no drops,
    and the CLI and HTTP agree on every file."""
    run = subprocess.run(
        [sys.executable, "-m", "load_tests.fuzz", "--n", "24", "--replay", "2", "--limit-s", "600"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    http, cli = report["http"], report["cli"]
    assert http["5xx"] == 0 and http["dropped"] == 0
    assert report["disagreements"] == 0, report["disagreement_examples"]
    assert "timeout" not in cli["outcomes"] and "crashed" not in cli["outcomes"]
    assert http["max_latency_s"] < 30 and cli["max_cpu_s"]["s"] < 10
    assert http["rss_mb_after"] - http["rss_mb_before"] < 512
