"""Traces leave the service over OTLP/HTTP with one trace per request across the graph."""

from __future__ import annotations

import time

from tests.conftest import audio
from tests.serving.conftest import Collector, Service

STAGES = {"embed", "decode", "resample", "window", "queue", "infer", "postprocess"}


def test_request_spans_cover_every_stage_across_services(
    server: Service, collector: Collector
) -> None:
    request_id = "trace-check-0001"
    with server.client() as c:
        response = c.post(
            "/embed",
            files={
                "audio": ("a.wav", audio("birdnet_sample_3s_48k.wav").read_bytes(), "audio/wav")
            },
            headers={"X-Request-ID": request_id},
        )
    assert response.status_code == 200
    deadline = time.monotonic() + 30
    trace: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        spans = collector.spans()
        root = [
            s
            for s in spans
            if s["name"] == "embed" and s["attributes"].get("request_id") == request_id
        ]  # type: ignore[union-attr]
        if root:
            trace = [s for s in spans if s["trace_id"] == root[0]["trace_id"]]
            if {str(s["name"]) for s in trace} >= STAGES:
                break
        time.sleep(0.5)
    names = {str(s["name"]) for s in trace}
    assert names >= STAGES, names
    services = {str(s["service"]) for s in trace}
    assert {"Entry", "CpuModel"} <= services, services
    infer = next(s for s in trace if s["name"] == "infer")
    assert (
        infer["service"] == "CpuModel" and infer["attributes"]["provider"] == "CPUExecutionProvider"
    )  # type: ignore[index]
    assert all(int(s["end"]) >= int(s["start"]) for s in trace)  # type: ignore[call-overload]
