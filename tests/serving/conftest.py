"""A real service graph (`bentoml serve`, three services) on 127.0.0.1 for the HTTP tests.

The server gets its own models directory (links to the built artifacts plus extra
perch-contract versions for canary and hot-swap tests, one of them deliberately corrupt),
its own state directory and hashed API keys, and exports traces over OTLP/HTTP to a
collector running in the test process. The moto server (``moto_endpoint``) and
``aws_client`` live in the root ``tests/conftest.py``, shared with the worker and queue tests.

The generic pieces (``Service``, ``free_port``, ``samples``, ``base_env``) live in
``load_tests/server.py`` so that the load benchmark starts the service exactly as these
tests do; they are re-exported here for the test modules.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from load_tests.server import Service, base_env, free_port, samples  # noqa: F401  re-exported
from sevensense.artifacts.registry import Artifact, ModelRegistry
from sevensense.builders.build import build_perch_contract
from sevensense.serving.access.keys import generate_key, hash_key
from tests.conftest import MODELS, aws_client  # noqa: F401  re-exported; moto_endpoint is there too

KEYS = ("partner", "reader", "admin", "slow")


def link_artifact(artifact: Artifact, root: Path) -> None:
    """Symlink the weights (no 50-MB copies), copy the small files."""
    m = artifact.manifest
    target = root / m.name / m.version / m.variant
    target.mkdir(parents=True, exist_ok=True)
    for item in artifact.directory.iterdir():
        if item.suffix in (".onnx", ".data"):
            (target / item.name).symlink_to(item)
        elif item.is_file():
            shutil.copy2(item, target / item.name)


class Collector:
    """An OTLP/HTTP trace receiver: keeps every ExportTraceServiceRequest body."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                collector.bodies.append(self.rfile.read(length))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def spans(self) -> list[dict[str, object]]:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        found: list[dict[str, object]] = []
        for body in list(self.bodies):
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource_spans in request.resource_spans:
                attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for s in scope_spans.spans:
                        found.append(
                            {
                                "name": s.name,
                                "attributes": {
                                    a.key: a.value.string_value or a.value.int_value
                                    for a in s.attributes
                                },
                                "trace_id": s.trace_id.hex(),
                                "service": attrs.get("service.name", ""),
                                "start": s.start_time_unix_nano,
                                "end": s.end_time_unix_nano,
                            }
                        )
        return found


@pytest.fixture(scope="session")
def serving_models(
    tmp_path_factory: pytest.TempPathFactory,
    birdnet_artifact: Artifact,
    perch_artifact: Artifact,
    birdnet_range_artifact: Artifact,
) -> Path:
    """BirdNET (the default) and perch-contract 1.0.0 linked with their int8 variants, and
    BirdNET's range model;
    1.1.0 built with another seed; 1.2.0 built, then corrupted on disk (same size, one
    byte changed)."""
    root = tmp_path_factory.mktemp("serving-models")
    source = ModelRegistry(MODELS)
    for artifact in (birdnet_artifact, perch_artifact):
        link_artifact(artifact, root)
        m = artifact.manifest
        link_artifact(source.resolve(f"{m.name}:{m.version}:quantized"), root)
    link_artifact(birdnet_range_artifact, root)  # the species range filter
    registry = ModelRegistry(root)
    build_perch_contract(registry, version="1.1.0", seed=11)
    bad = build_perch_contract(registry, version="1.2.0", seed=12)
    data = bytearray(bad.model_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.model_path.write_bytes(bytes(data))
    return root


@pytest.fixture(scope="session")
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.server.shutdown()


def service_env(models: Path, state: Path, keys: dict[str, str], **extra: str) -> dict[str, str]:
    records: list[dict[str, object]] = [
        {"id": "partner", "sha256": hash_key(keys["partner"]), "scopes": ["embed", "read"]},
        {"id": "reader", "sha256": hash_key(keys["reader"]), "scopes": ["read"]},
        {"id": "admin", "sha256": hash_key(keys["admin"]), "scopes": ["embed", "read", "admin"]},
        {
            "id": "slow",
            "sha256": hash_key(keys["slow"]),
            "scopes": ["embed", "read"],
            "rate_limit_per_s": 0.2,
        },
    ]
    return base_env(models, state, records, **extra)


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, serving_models: Path, collector: Collector
) -> Iterator[Service]:
    state = tmp_path_factory.mktemp("serving-state")
    keys = {k: generate_key() for k in KEYS}
    env = service_env(
        serving_models,
        state,
        keys,
        SEVENSENSE_SERVING__TRACING_EXPORTER="otlp",
        SEVENSENSE_SERVING__OTLP_ENDPOINT=collector.endpoint,
        SEVENSENSE_SERVING__TRACING_SAMPLE_RATE="1.0",
        SEVENSENSE_VERIFICATION__ENABLE_BIRDNET="true",  # verify=true (test_verification.py)
        # test_stream.py: bounds small enough to reach within a test.
        SEVENSENSE_SERVING__STREAM__MAX_PER_KEY="3",
        SEVENSENSE_SERVING__STREAM__MAX_SPEED="30",
        SEVENSENSE_SERVING__STREAM__BURST_S="10",
        SEVENSENSE_SERVING__STREAM__MAX_FRAME_BYTES="262144",
        SEVENSENSE_SERVING__STREAM__SLOW_READER_S="3",
        SEVENSENSE_SERVING__STREAM__RESUME_TTL_S="120",
        # test_service_search.py: a hoplite compaction inside the server (40 windows at once)
        SEVENSENSE_INDEX__COMPACT_AFTER="30",
        # test_scaling_metrics.py: the EMF lines, often enough to see within a test.
        SEVENSENSE_SERVING__SCALING_METRICS__ENABLED="true",
        SEVENSENSE_SERVING__SCALING_METRICS__INTERVAL_S="1",
        SEVENSENSE_SERVING__SCALING_METRICS__SERVICE="sevensense-test",
    )
    service = Service(free_port(), env, state / "server.log", keys)
    service.start()
    yield service
    service.stop()
