"""The peers' own virtualenvs, made once and reused by the tests and the benchmarks:
``.venv-birdnet`` (the BirdNET team's ``birdnet`` package, LiteRT) and, where the tests have
made it, BirdNET-Analyzer 2.4.0's under ``PEER_VENVS`` (outside the checkout, so a fresh
clone on the same machine reuses it; ``SEVENSENSE_PEER_VENVS`` moves it)."""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

from sevensense.settings import repo_root

REPO = repo_root()
BIRDNET_REQUIREMENT = "birdnet==1.3.1"
BIRDNET_VENV = REPO / ".venv-birdnet"
PEER_VENVS = Path(
    os.environ.get("SEVENSENSE_PEER_VENVS", Path.home() / ".cache" / "sevensense" / "peer-venvs")
)
ANALYZER_VENV = PEER_VENVS / "birdnet-analyzer"


def birdnet_python() -> Path:
    """The ``birdnet`` package's interpreter, its virtualenv made (pinned) if missing."""
    python = BIRDNET_VENV / "bin" / "python"
    stamp = BIRDNET_VENV / ".requirement"
    if not (python.exists() and stamp.exists() and stamp.read_text() == BIRDNET_REQUIREMENT):
        venv.EnvBuilder(with_pip=True, clear=True).create(BIRDNET_VENV)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                BIRDNET_REQUIREMENT,
            ],
            check=True,
            timeout=900,
        )
        stamp.write_text(BIRDNET_REQUIREMENT)
    return python


def analyzer_python() -> Path | None:
    """BirdNET-Analyzer's interpreter where its virtualenv exists; None otherwise."""
    python = ANALYZER_VENV / "bin" / "python"
    if not python.exists():
        return None
    probe = subprocess.run(
        [str(python), "-c", "import birdnet_analyzer"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    return python if probe.returncode == 0 else None
