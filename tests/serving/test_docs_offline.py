"""``/docs`` and ``/redoc`` work on a network with no way out: the AWS deployment has no NAT
and field stations have no internet, so every asset the pages need must come from the server.

The browser check runs headless Chromium with every host except 127.0.0.1 unresolvable and a
net log of the page's requests: the ``/embed`` operation can only appear in the DOM if the
UI's script loaded from the server, and the log shows nothing was asked of another host.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.serving.conftest import Service

ABSOLUTE = re.compile(r"https?://[^\s\"'<>)]+")
CONTENT_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
}
INSTALL_TIMEOUT_S = 600
BROWSER_TIMEOUT_S = 90


class Assets(HTMLParser):
    """The URLs a page makes the browser fetch: script sources and link targets."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.urls.append(value)


def assets_of(html: str) -> list[str]:
    parser = Assets()
    parser.feed(html)
    return parser.urls


def foreign_urls(text: str, own: str) -> list[str]:
    return [url for url in ABSOLUTE.findall(text) if not url.startswith(own + "/")]


@pytest.mark.parametrize("page", ["/docs", "/redoc", "/docs/oauth2-redirect"])
def test_page_needs_nothing_from_outside(server: Service, page: str) -> None:
    # No API key: the documentation is as open as /openapi.json.
    response = httpx.get(server.url + page)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert foreign_urls(response.text, server.url) == []
    urls = assets_of(response.text)
    if page != "/docs/oauth2-redirect":
        assert any(url.endswith(".js") for url in urls), urls
    for url in urls:
        asset = httpx.get(urljoin(server.url + page, url))
        assert asset.status_code == 200, (url, asset.text[:200])
        suffix = Path(urlsplit(url).path).suffix
        assert asset.headers["content-type"].split(";")[0] in CONTENT_TYPES[suffix], url
        assert asset.headers.get("etag"), url  # revalidated, not fetched again in full
        assert len(asset.content) > 1000, url
    if page != "/docs/oauth2-redirect":
        assert "default-src 'self'" in response.headers["content-security-policy"]


def test_assets_outside_the_package_are_not_served(server: Service) -> None:
    # The last two name real files of the package, one directory up from its assets.
    for path in (
        "/docs/assets/nothing.js",
        "/docs/assets/%2e%2e/__init__.py",
        "/docs/assets/..%2fcore.py",
    ):
        response = httpx.get(server.url + path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"


def test_docs_pages_are_not_in_the_api_document(server: Service) -> None:
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]


def _install_chromium() -> str | None:
    """Debian's package, installed at test time when missing: CI runs as root on a fresh
    machine, and the browser is too large to add to every ``make setup``."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "chromium is not on PATH and apt-get is not usable (not root, or not Debian)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"],
    ):
        try:
            done = subprocess.run(
                command,
                check=False,
                env=env,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            return f"{' '.join(command)} took over {INSTALL_TIMEOUT_S} s"
        if done.returncode != 0:
            return f"{' '.join(command)} failed: {(done.stdout + done.stderr)[-800:]}"
    return None if shutil.which("chromium") else "apt-get installed chromium but not on PATH"


@pytest.fixture(scope="session")
def chromium() -> str:
    if shutil.which("chromium") is None and (reason := _install_chromium()):
        pytest.skip(f"no headless browser: {reason}")
    found = shutil.which("chromium")
    assert found is not None
    return found


def page_requests(net_log: Path, origin: str) -> set[str]:
    """Every URL the page asked for, from Chromium's net log: those requests name the page's
    origin as their initiator, while Chromium's own traffic (component updates, sign-in,
    autofill queries) names none."""
    text = net_log.read_text(errors="replace")
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # cut short when the browser exits mid-write
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return {
        event["params"]["url"]
        for event in log["events"]
        if event["type"] == start and event.get("params", {}).get("initiator") == origin
    }


# ReDoc's sidebar shows a logo from its CDN, hard-coded; the page's policy refuses it.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
CSP_REFUSED = re.compile(r"'(\S+)' violates the following Content Security Policy")


@pytest.mark.parametrize(
    ("page", "refused"), [("/docs", set()), ("/redoc", {REDOC_LOGO})], ids=["swagger", "redoc"]
)
def test_page_renders_offline_in_a_browser(
    server: Service, chromium: str, tmp_path: Path, page: str, refused: set[str]
) -> None:
    net_log = tmp_path / "net-log.json"
    command = [
        chromium,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--log-net-log={net_log}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=15000",
        "--dump-dom",
        server.url + page,
    ]
    started = time.monotonic()
    done = subprocess.run(
        command, check=False, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    if page == "/docs":
        rendered = 'data-path="/embed"' in dom and re.search(
            r'class="opblock-summary-path"[^>]*>.*?/embed', dom
        )
    else:
        document = httpx.get(f"{server.url}/openapi.json").json()
        operation = document["paths"]["/embed"]["post"]["operationId"]
        rendered = f'data-section-id="operation/{operation}"' in dom
    assert rendered, f"/embed not rendered after {took:.1f} s: {dom[-2000:]}"
    assert set(CSP_REFUSED.findall(done.stderr)) == refused, done.stderr[-2000:]

    fetched = page_requests(net_log, server.url)
    assert f"{server.url}/openapi.json" in fetched, fetched
    assert any(u.startswith(f"{server.url}/docs/assets/") for u in fetched), fetched
    assert {u for u in fetched if not u.startswith(server.url + "/")} == set()
