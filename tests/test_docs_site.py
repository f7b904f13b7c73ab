"""The documentation site and the README's quick start.

The site (docs/, mkdocs.yml) builds with ``mkdocs build --strict``: a link to a missing page
or a missing anchor fails it. Every page is in the nav, and the README's links resolve.
Every line of the README's offline quick-start blocks runs here as written, with
``.venv/bin/`` replaced by this interpreter's directory and ``out/`` by a temporary
directory; the HTTP and stream blocks run against the test server in
tests/serving/test_docs_quickstart.py. Blocks are found by the HTML comment above them
(``<!-- quickstart: NAME -->``), which GitHub and mkdocs do not render.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"
BIN = Path(sys.executable).parent  # the virtualenv the suite runs in (.venv/bin under make test)
OUTPUT_OPTIONS = ("--out", "-o")


def quickstart_block(name: str, readme: Path = README) -> str:
    """The body of the fenced block right below ``<!-- quickstart: NAME -->``."""
    text = readme.read_text()
    found = re.search(
        rf"<!-- quickstart: {re.escape(name)} -->\s*\n```[a-z]*\n(.*?)\n```", text, re.DOTALL
    )
    assert found, f"README.md has no block marked <!-- quickstart: {name} -->"
    return found.group(1)


def quickstart_commands(name: str) -> list[str]:
    """The block's command lines as written, but for blank lines, comments and ``make``
    lines (the suite itself is ``make test``)."""
    lines = (raw.strip() for raw in quickstart_block(name).splitlines())
    return [line for line in lines if line and not line.startswith(("#", "make "))]


def localise(command: str, out_dir: Path) -> tuple[str, list[Path]]:
    """``command`` with ``.venv/bin/`` → this interpreter's bin directory and ``out/…`` →
    ``out_dir/…`` (as text, so that bash still expands ``"$KEY"``); also the paths it
    writes (the arguments of ``--out``/``-o``)."""
    local = re.sub(r"(?<![\w./-])\.venv/bin/", f"{BIN}/", command)
    local = re.sub(r"(?<![\w./-])out/", f"{out_dir}/", local)
    words = shlex.split(local, comments=True)
    outputs = [Path(w) for prev, w in itertools.pairwise(words) if prev in OUTPUT_OPTIONS]
    return local, outputs


def run_command(
    command: str, out_dir: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Runs one quick-start line with bash in the repository root (``../shared/audio`` is
    relative to it); asserts exit 0 and that every file it names as output exists."""
    local, outputs = localise(command, out_dir)
    proc = subprocess.run(
        ["bash", "-c", local],
        check=False,
        cwd=REPO,
        env={**os.environ, "BENTOML_DO_NOT_TRACK": "true", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{command}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    for path in outputs:
        assert path.exists(), f"{command}: {path} was not written"
        if path.is_dir():
            assert any(path.iterdir()), f"{command}: {path} is empty"
        else:
            assert path.stat().st_size > 0, f"{command}: {path} is empty"
    return proc


def nav_pages(node: object) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [page for item in node for page in nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in nav_pages(value)]
    return []


def test_site_builds_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    build = ["build", "--strict", "-f", str(REPO / "mkdocs.yml"), "-d", str(site)]
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", *build],
        check=False,
        cwd=REPO,  # the snippets' base path (the Terraform page includes infra/terraform/README.md)
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "index.html").is_file()
    assert "Application configuration contract" in (site / "infra-terraform.html").read_text()


def test_every_page_is_in_the_nav() -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    in_nav = nav_pages(config["nav"])
    assert len(in_nav) == len(set(in_nav)), "a page is twice in the nav"
    on_disk = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(in_nav) == on_disk


def test_readme_links_resolve() -> None:
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    local = [link.split("#")[0] for link in links if not re.match(r"[a-z]+://", link)]
    assert any(link.startswith("docs/") for link in local)
    for link in local:
        assert (REPO / link).is_file(), f"README.md links to {link}, which does not exist"
    for page in DOCS.glob("*.md"):  # every page is reachable from the README too
        assert f"docs/{page.name}" in local, f"README.md does not link to docs/{page.name}"


def test_readme_starts_with_the_two_commands() -> None:
    text = README.read_text()
    two = "\n".join(
        [
            "```bash",
            "make run    # installs everything into .venv, builds the models, starts the HTTP"
            " service",
            "make test   # installs everything into .venv, builds the models, runs lint, mypy and"
            " all tests",
            "```",
        ]
    )
    assert text.index("## Two commands") < text.index(two) < text.index("## Quick start")
    assert text.index("## Two commands") == text.index("\n## ") + 1  # the first section


def test_quickstart_cli(tmp_path: Path) -> None:
    commands = quickstart_commands("cli")
    assert len(commands) >= 4
    for command in commands:
        proc = run_command(command, tmp_path)
        if " show " in command:
            assert proc.stdout.strip(), command


def test_quickstart_python(tmp_path: Path) -> None:
    script = tmp_path / "quickstart.py"
    script.write_text(quickstart_block("python"))
    proc = subprocess.run(
        [sys.executable, str(script)],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(proc.stdout.splitlines()) >= 2  # one line per window of a real recording
