"""The README's HTTP and live-stream quick start, line by line, against the real test server.

The lines run as written, with the server's URL for http://127.0.0.1:3000, a partner key for
``$KEY`` (the line reading ``.state/dev-api-key`` that ``make run`` writes is skipped), and
``curl --fail-with-body`` so that an HTTP error fails the line.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.serving.conftest import Service
from tests.test_docs_site import quickstart_commands, run_command

README_URL = "http://127.0.0.1:3000"


def test_quickstart_http(server: Service, tmp_path: Path) -> None:
    commands = [c for c in quickstart_commands("http") if not c.startswith("KEY=")]
    assert len(commands) >= 3
    for command in commands:
        assert README_URL in command, command
        local = command.replace(README_URL, server.url)
        if local.startswith("curl "):  # an HTTP error fails the line
            local = "curl --fail-with-body -sS " + local.removeprefix("curl ")
        proc = run_command(local, tmp_path, env={"KEY": server.keys["partner"]})
        if " -o " not in command:
            assert proc.stdout.strip(), command


def test_quickstart_stream(server: Service, tmp_path: Path) -> None:
    (command,) = quickstart_commands("stream")
    proc = run_command(
        command.replace(README_URL, server.url), tmp_path, env={"KEY": server.keys["partner"]}
    )
    messages = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    windows = [m for m in messages if m.get("type") == "window"]
    assert len(windows) == 40  # the 120-s soundscape in BirdNET's 3-s windows
    assert messages[-1]["type"] == "summary"
