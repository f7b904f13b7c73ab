"""Detections over HTTP: `POST /detect` (JSON or BirdNET-Analyzer's files), `format=` on
`/embed` for the text formats, and the species filter, against the real server."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import audio
from tests.serving.conftest import Service

SOUNDSCAPE = audio("soundscape_birdnet_120s_48k.flac")
YELLOWTHROAT = audio("labelled/common_yellowthroat.mp3")
CLIP_32K = audio("labelled/opensoundscape_birds_10s_32k.wav")


def post(
    server: Service, path: str, source: Path, key: str = "partner", **form: object
) -> httpx.Response:
    with server.client(key) as c:
        return c.post(
            path,
            files={"audio": (source.name, source.read_bytes(), "application/octet-stream")},
            data={k: str(v) for k, v in form.items()},
        )


def test_detect_json_matches_the_cli(server: Service, tmp_path: Path) -> None:
    response = post(server, "/detect", SOUNDSCAPE)
    assert response.status_code == 200, response.text
    # The CLI runs the full-precision model; the int8 fallback would differ by ~1e-2.
    headers = {k: v for k, v in response.headers.items() if k.startswith("x-")}
    assert headers["x-model-variant"] == "base" and "x-degraded" not in headers, headers
    body = response.json()
    assert body["windows"] == 40 and body["min_conf"] == 0.25
    served = [
        (d["start_s"], d["end_s"], d["label"], round(d["confidence"], 4))
        for d in body["detections"]
    ]
    out = tmp_path / "cli.csv"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sevensense.cli",
            "--models-dir",
            str(server.env["SEVENSENSE_MODELS_DIR"]),
            "detect",
            str(SOUNDSCAPE),
            "--out",
            str(out),
            "--format",
            "csv",
            "--quiet",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    rows = list(csv.DictReader(out.open()))
    cli = [
        (
            float(r["Start (s)"]),
            float(r["End (s)"]),
            f"{r['Scientific name']}_{r['Common name']}",
            float(r["Confidence"]),
        )
        for r in rows
    ]
    assert len(served) == len(cli) > 0
    for (s0, e0, l0, c0), (s1, e1, l1, c1) in zip(served, cli, strict=True):
        assert (round(s0, 2), round(e0, 2), l0) == (s1, e1, l1)
        assert abs(c0 - c1) <= 2e-4


def test_text_formats_from_detect_and_embed(server: Service) -> None:
    raven = post(server, "/detect", YELLOWTHROAT, format="raven")
    assert raven.status_code == 200, raven.text
    assert raven.headers["content-type"].startswith("text/tab-separated-values")
    lines = raven.text.splitlines()
    assert lines[0].startswith("Selection\tView\tChannel\tBegin Time (s)")
    assert lines[1].split("\t")[7:9] == ["Common Yellowthroat", "comyel"]
    assert lines[1].split("\t")[10] == "common_yellowthroat.mp3"
    same = post(server, "/embed", YELLOWTHROAT, format="raven")
    assert same.status_code == 200 and same.text == raven.text
    kaleidoscope = post(
        server, "/detect", YELLOWTHROAT, format="kaleidoscope", lat=42.48, lon=-76.45, week=20
    )
    assert kaleidoscope.status_code == 200, kaleidoscope.text
    row = list(csv.reader(io.StringIO(kaleidoscope.text)))[1]
    assert row[8:11] == ["42.4800", "-76.4500", "20"]
    audacity = post(server, "/detect", YELLOWTHROAT, format="audacity", top_k=2)
    assert len(audacity.text.splitlines()) == 4  # two windows, two classes each


def test_species_filter_over_http(server: Service) -> None:
    everywhere = post(server, "/detect", SOUNDSCAPE).json()
    ithaca = post(server, "/detect", SOUNDSCAPE, lat=42.48, lon=-76.45, week=20).json()
    assert ithaca["species_filter"] == {
        "kind": "location",
        "lat": 42.48,
        "lon": -76.45,
        "week": 20,
        "threshold": 0.03,
        "size": 132,
    }
    names = lambda body: {d["scientific_name"] for d in body["detections"]}  # noqa: E731
    assert "Clamator coromandus" in names(everywhere) and "Clamator coromandus" not in names(ithaca)
    embed = post(
        server,
        "/embed",
        SOUNDSCAPE,
        species="Junco hyemalis_Dark-eyed Junco, Cyanocitta cristata",
        top_k=3,
    )
    assert embed.status_code == 200, embed.text
    body = embed.json()
    assert body["species_filter"] == {"kind": "list", "size": 2}
    assert {s["label"] for w in body["windows"] for s in w["top_k"]} <= {
        "Junco hyemalis",
        "Cyanocitta cristata",
    }


def test_bad_filters_are_typed_errors(server: Service) -> None:
    for form, status, code in [
        ({"lat": 91, "lon": 0}, 422, "invalid_request"),
        ({"lat": 10, "lon": 0, "week": 49}, 422, "invalid_request"),
        ({"lat": 10, "lon": 0, "week": 0}, 422, "invalid_request"),
        ({"lat": 10}, 422, "invalid_request"),
        ({"species": ",,"}, 422, "invalid_species_filter"),
        ({"species": "Foo barus_Nothing"}, 422, "invalid_species_filter"),
        ({"min_conf": 2}, 422, "invalid_request"),
    ]:
        response = post(server, "/detect", YELLOWTHROAT, **form)
        assert response.status_code == status, (form, response.text)
        assert response.json()["error"]["code"] == code, (form, response.text)
    unknown = post(server, "/detect", YELLOWTHROAT, species="Foo barus_Nothing")
    assert "Foo barus" in unknown.json()["error"]["message"]
    assert post(server, "/detect", YELLOWTHROAT, key="reader").status_code == 403


def test_birdnet_analyzer_options_over_http(server: Service) -> None:
    # Detections resample as BirdNET-Analyzer does (resampy kaiser_fast) unless asked not
    # to; on this 32 kHz clip that decides the 0-3 s window's best species.
    default = post(server, "/detect", CLIP_32K, min_conf=0.1)
    assert default.status_code == 200, default.text
    assert default.headers["x-resampler"] == "kaiser_fast"
    body = default.json()
    assert body["resampler"].startswith("resampy kaiser_fast")
    first = [d for d in body["detections"] if d["start_s"] == 0.0]
    assert first[0]["common_name"] == "Eastern Towhee"
    soxr = post(server, "/detect", CLIP_32K, min_conf=0.1, resampler="high").json()
    assert soxr["resampler"] == "soxr HQ"
    assert next(d for d in soxr["detections"] if d["start_s"] == 0.0)["common_name"] != (
        "Eastern Towhee"
    )
    keener = post(server, "/detect", CLIP_32K, min_conf=0.1, sensitivity=1.5).json()
    assert keener["sensitivity"] == 1.5
    assert len(keener["detections"]) > len(body["detections"])
    merged = post(
        server, "/detect", CLIP_32K, min_conf=0.1, sensitivity=1.5, merge_consecutive=10
    ).json()
    assert len(merged["detections"]) < len(keener["detections"])
    assert max(d["end_s"] - d["start_s"] for d in merged["detections"]) > 3.0
    embedded = post(server, "/embed", CLIP_32K)
    assert embedded.status_code == 200 and embedded.headers["x-resampler"] == "high"
    refused = post(server, "/detect", CLIP_32K, sensitivity=2.0)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "invalid_request"
