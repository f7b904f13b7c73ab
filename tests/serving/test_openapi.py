"""The OpenAPI document is valid and the server keeps to it, checked with schemathesis:
generated requests (valid and invalid) against every documented operation."""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance
from schemathesis.specs.openapi.checks import ignored_auth

from tests.serving.conftest import Service

EXPECTED = {
    ("POST", "/embed"),
    ("POST", "/detect"),
    ("GET", "/models"),
    ("GET", "/models/{name}"),
    ("POST", "/admin/models/{name}/activate"),
    ("PUT", "/admin/models/{name}/traffic"),
    ("GET", "/status"),
    ("GET", "/quality"),
    ("GET", "/jobs/{job_id}"),
    ("GET", "/jobs/{job_id}/files/{name}"),
    ("POST", "/search"),
    ("DELETE", "/index/recordings/{recording_id}"),
    ("POST", "/annotations"),
    ("GET", "/annotations"),
    ("DELETE", "/annotations"),
    ("POST", "/classifiers"),
    ("GET", "/classifiers"),
    ("GET", "/classifiers/{ref}/review"),
    ("GET", "/classifiers/{ref}/histogram"),
    ("POST", "/classifiers/{ref}/apply"),
    ("GET", "/windows/{window_id}/audio"),
    ("GET", "/windows/{window_id}/spectrogram.png"),
    ("POST", "/admin/batch/submissions"),
    ("GET", "/admin/batch/submissions/{submission_id}"),
}


def test_document_lists_every_endpoint(server: Service) -> None:
    document = httpx.get(f"{server.url}/openapi.json").json()
    assert document["openapi"].startswith("3.")
    operations = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    assert operations == EXPECTED
    embed = document["paths"]["/embed"]["post"]
    assert "multipart/form-data" in embed["requestBody"]["content"]
    assert {"401", "403", "413", "415", "422", "429", "503"} <= set(embed["responses"])
    assert document["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"


def test_server_conforms_to_its_document(server: Service) -> None:
    # schemathesis' pytest plugin does not load under this pytest; its strategies do.
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    checked = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        checked.add((operation.method.upper(), operation.path))

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        def conforms(case) -> None:  # type: ignore[no-untyped-def]
            # Generated audio is random bytes, so a 415/422 answer is the right one and
            # "valid by the schema must be accepted" does not apply; admin operations run
            # with a partner key and must answer with the documented 403.
            case.call_and_validate(
                headers={"X-API-Key": server.keys["partner"]},
                excluded_checks=[positive_data_acceptance, ignored_auth],
            )

        conforms()
    assert checked == EXPECTED
