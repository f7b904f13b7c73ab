"""Similarity search over the real loopback server: ``/embed`` with ``index=true`` stores
windows under the caller's tenant, ``/search`` finds them by audio or by vector with
filters, ``DELETE /index/recordings/{id}`` removes them, and every failure has its JSON
error. The server's index is the embedded (hoplite) backend in its state directory."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import audio
from tests.serving.conftest import Service

SOUNDSCAPE = audio("soundscape_birdnet_120s_48k.flac")
CLIP = audio("perch_testclip_10s_16k.wav")
SAMPLE = audio("birdnet_sample_3s_48k.wav")


def post(
    service: Service, path: str, key: str, files: dict | None = None, **form: object
) -> httpx.Response:  # type: ignore[type-arg]
    with service.client(key) as c:
        return c.post(path, files=files, data={k: str(v) for k, v in form.items()}, timeout=120)


def embed_into_index(
    service: Service, key: str, path, recording_id: str, **form: object
) -> httpx.Response:  # type: ignore[no-untyped-def]
    with path.open("rb") as f:
        return post(
            service,
            "/embed",
            key,
            files={"audio": (path.name, f.read(), "application/octet-stream")},
            index="true",
            recording_id=recording_id,
            overlap=form.pop("overlap", 0.0),
            **form,
        )


def search_audio(service: Service, key: str, path, **form: object) -> httpx.Response:  # type: ignore[no-untyped-def]
    with path.open("rb") as f:
        return post(
            service, "/search", key, files={"audio": (path.name, f.read(), "audio/wav")}, **form
        )


@pytest.fixture(scope="module")
def indexed(server: Service) -> dict[str, list[float]]:
    """The partner indexes the soundscape (site north) and the clip; the admin indexes the
    clip under its own tenant. Returns the first window's embedding of the clip."""
    r = embed_into_index(
        server,
        "partner",
        SOUNDSCAPE,
        "site7/soundscape",
        site="north",
        recorded_at="2026-05-01T06:00:00Z",
    )
    assert r.status_code == 200, r.text
    assert int(r.headers["X-Indexed-Windows"]) == len(r.json()["windows"]) == 40
    r = embed_into_index(server, "partner", CLIP, "site9/clip", site="south")
    assert r.status_code == 200, r.text
    clip_vector = r.json()["windows"][0]["embedding"]
    # a redelivered request adds nothing twice
    again = embed_into_index(server, "partner", CLIP, "site9/clip", site="south")
    assert again.headers["X-Indexed-Windows"] == "0"
    r = embed_into_index(server, "admin", CLIP, "admin/clip")
    assert r.headers["X-Indexed-Windows"] == "4"
    return {"clip": clip_vector}


def test_search_by_audio_and_vector(server: Service, indexed: dict[str, list[float]]) -> None:
    r = search_audio(server, "partner", CLIP, k=3, window=0, overlap=0.5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["space"] == "birdnet-v2.4@2.4.0@full" and body["metric"] == "cosine"
    [query] = body["queries"]
    best = query["neighbours"][0]
    assert query["window"] == 0
    assert (best["recording_id"], best["start_s"]) == ("site9/clip", 0.0)
    assert best["score"] > 0.99 and best["model_version"] == "2.4.0"
    # every window of the query is a query
    r = search_audio(server, "partner", CLIP, k=2, overlap=0.5)
    assert len(r.json()["queries"]) == 6
    # the same answer by vector, with the model named
    r = post(
        server,
        "/search",
        "partner",
        embedding=json.dumps(indexed["clip"]),
        k=3,
        model="birdnet-v2.4:2.4.0",
    )
    assert r.status_code == 200, r.text
    assert r.json()["queries"][0]["neighbours"][0]["recording_id"] == "site9/clip"
    assert r.json()["queries"][0]["window"] is None


def test_filters_and_tenancy(server: Service, indexed: dict[str, list[float]]) -> None:
    vector = json.dumps(indexed["clip"])
    r = post(server, "/search", "partner", embedding=vector, k=200)
    partner_hits = r.json()["queries"][0]["neighbours"]
    assert {n["recording_id"] for n in partner_hits} == {"site7/soundscape", "site9/clip"}
    r = post(server, "/search", "admin", embedding=vector, k=500)
    assert {n["recording_id"] for n in r.json()["queries"][0]["neighbours"]} == {
        "site7/soundscape",
        "site9/clip",
        "admin/clip",
    }
    r = post(server, "/search", "partner", embedding=vector, k=5, site="north")
    assert {n["recording_id"] for n in r.json()["queries"][0]["neighbours"]} == {"site7/soundscape"}
    r = post(server, "/search", "partner", embedding=vector, k=5, recording_prefix="site9/")
    assert {n["recording_id"] for n in r.json()["queries"][0]["neighbours"]} == {"site9/clip"}
    r = post(
        server,
        "/search",
        "partner",
        embedding=vector,
        k=5,
        time_from="2026-05-01T00:00:00Z",
        time_to="2026-05-02T00:00:00Z",
    )
    hits = r.json()["queries"][0]["neighbours"]
    assert hits and all(n["recording_id"] == "site7/soundscape" for n in hits)
    # the reader key indexed nothing: its scope is empty
    r = post(server, "/search", "reader", embedding=vector, k=5)
    assert r.status_code == 409 and r.json()["error"]["code"] == "index_empty"


def test_errors_are_json(server: Service, indexed: dict[str, list[float]]) -> None:
    def code(r: httpx.Response) -> tuple[int, str]:
        return r.status_code, r.json()["error"]["code"]

    assert code(post(server, "/search", "partner", embedding="[0.1, 0.2]", k=3)) == (
        422,
        "dimension_mismatch",
    )
    assert code(
        post(server, "/search", "partner", embedding=json.dumps(indexed["clip"]), index="nosuch")
    ) == (404, "index_not_found")
    assert code(
        post(
            server,
            "/search",
            "partner",
            embedding=json.dumps(indexed["clip"]),
            model="birdnet-v2.4:9.9",
        )
    ) == (404, "index_not_found")
    assert code(search_audio(server, "partner", SAMPLE, reduce="nosuch")) == (
        404,
        "reducer_not_found",
    )
    assert code(post(server, "/search", "partner", embedding="not json")) == (
        422,
        "invalid_request",
    )
    assert code(post(server, "/search", "partner", k=3)) == (422, "invalid_request")
    assert code(search_audio(server, "partner", SAMPLE, window=40)) == (422, "invalid_request")
    # not a number, or not a float32: refused before any index is read
    width = len(indexed["clip"])
    for bad in ("NaN", "Infinity", "-Infinity", "1e39"):
        vector = "[" + ", ".join([bad] + ["0.1"] * (width - 1)) + "]"
        assert code(post(server, "/search", "partner", embedding=vector)) == (
            422,
            "invalid_request",
        ), bad
    vector = json.dumps(indexed["clip"])
    for k in (0, 1001, -1):
        r = post(server, "/search", "partner", embedding=vector, k=k)
        assert r.status_code == 422 and r.json()["error"]["code"] in {"invalid_request"}, k
    assert code(post(server, "/search", "partner", embedding=vector, metric="manhattan"))[0] == 422
    # a filter that matches nothing is an answer (no neighbours), not an error
    for flt in (
        {"site": "nowhere"},
        {"recording_prefix": "no/such/"},
        {"time_from": "2030-01-01T00:00:00Z", "time_to": "2020-01-01T00:00:00Z"},
    ):
        r = post(server, "/search", "partner", embedding=vector, k=5, **flt)
        assert r.status_code == 200 and r.json()["queries"][0]["neighbours"] == [], flt


def test_index_metrics(server: Service, indexed: dict[str, list[float]]) -> None:
    """Entries per space, windows added (adds/s by rate()), search time, compaction time."""
    assert post(server, "/search", "partner", embedding=json.dumps(indexed["clip"])).is_success
    with server.client("admin") as c:
        text = c.get("/metrics").text
    slug = "birdnet-v2.4@2.4.0@full"

    def value(name: str) -> float:
        lines = [ln for ln in text.splitlines() if ln.startswith(name)]
        assert lines, f"{name} not on /metrics"
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines)

    labels = f'backend="hoplite",index="default",space="{slug}"'
    assert value(f"sevensense_index_adds_total{{{labels}}}") >= 40 + 4 + 4
    assert value(f"sevensense_index_entries{{{labels}}}") >= 40
    assert value('sevensense_index_search_seconds_count{backend="hoplite"') >= 1
    # the soundscape's 40 windows crossed index.compact_after (30 in this server)
    assert value(f'sevensense_index_compaction_seconds_count{{index="default",space="{slug}"') >= 1


def test_delete_recording(server: Service, indexed: dict[str, list[float]]) -> None:
    with server.client("partner") as c:
        # the partner cannot delete the admin's recording, only its own
        assert c.delete("/index/recordings/admin/clip").json()["deleted"] == 0
        r = c.delete("/index/recordings/site9/clip")
        assert r.status_code == 200 and r.json() == {
            "index": "default",
            "recording_id": "site9/clip",
            "deleted": 4,
        }
    with server.client("reader") as c:
        assert c.delete("/index/recordings/site7/soundscape").status_code == 403
    r = post(server, "/search", "partner", embedding=json.dumps(indexed["clip"]), k=500)
    assert {n["recording_id"] for n in r.json()["queries"][0]["neighbours"]} == {"site7/soundscape"}
