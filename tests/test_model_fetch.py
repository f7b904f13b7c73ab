"""Model pull and import against real servers on 127.0.0.1: HTTP with byte ranges, and S3.

The Perch-contract test model stands in for Perch 2.0's file: it has the real I/O contract,
so the catalogue manifest, adjusted to its size and digest, describes it exactly.
"""

from __future__ import annotations

import hashlib
import http.server
import logging
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from sevensense.artifacts import catalog
from sevensense.artifacts.fetch import (
    REJECTED_NAME,
    STAGED_NAME,
    download,
    import_artifact,
    pull,
)
from sevensense.artifacts.manifest import (
    MANIFEST_NAME,
    MODEL_FILE,
    ModelManifest,
    load_manifest,
)
from sevensense.artifacts.registry import ModelRegistry
from sevensense.builders.perch_contract import build_perch_contract_model
from sevensense.errors import (
    ChecksumMismatchError,
    ContractMismatchError,
    DownloadError,
    ManifestError,
)
from tests.conftest import aws_client

pytestmark = pytest.mark.timeout(60)

MB = 1 << 20
FAST = 0.01  # seconds of backoff between attempts
BUCKET = "models"


@dataclass(frozen=True)
class Payload:
    data: bytes
    sha256: str

    @property
    def hint(self) -> str:
        return f"{self.sha256[:8]}…{self.sha256[-5:]}"


def _payload(model: onnx.ModelProto) -> Payload:
    data = model.SerializeToString()
    return Payload(data, hashlib.sha256(data).hexdigest())


@pytest.fixture(scope="module")
def model() -> Payload:
    return _payload(build_perch_contract_model())


@pytest.fixture(scope="module")
def wrong_contract() -> Payload:
    """A valid ONNX model whose outputs are not Perch's."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["inputs"], ["features"])],
        "not_perch",
        [helper.make_tensor_value_info("inputs", TensorProto.FLOAT, ["batch", 160_000])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 160_000])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(proto)
    return _payload(proto)


# --- HTTP server ---------------------------------------------------------------------------


@dataclass
class Served:
    data: bytes = b""
    status: int | None = None
    drop_after: list[int] = field(default_factory=list)
    drop_every: int | None = None
    honour_range: bool = True
    requests: list[dict[str, str]] = field(default_factory=list)
    bytes_sent: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    served: Served

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        served = self.served
        with served.lock:
            served.requests.append({k.lower(): v for k, v in self.headers.items()})
            drop = served.drop_after.pop(0) if served.drop_after else served.drop_every
        if served.status is not None:
            message = f"status {served.status}".encode()
            self.send_response(served.status)
            self.send_header("Content-Length", str(len(message)))
            self.end_headers()
            self.wfile.write(message)
            return
        data, start = served.data, 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if match and served.honour_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = memoryview(data)[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if drop is not None and drop < len(body):
            self.wfile.write(body[:drop])
            served.bytes_sent.append(drop)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        try:
            self.wfile.write(body)
        except ConnectionError:
            return  # the client hung up on purpose (e.g. a size it will not accept)
        served.bytes_sent.append(len(body))


@pytest.fixture
def server() -> Iterator[tuple[Served, str]]:
    served = Served()
    handler = type("Handler", (_Handler,), {"served": served})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{httpd.server_address[1]}/perch_v2.onnx"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def _local_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No proxy, profile or instance metadata may send a request off 127.0.0.1."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


# --- registry helpers ----------------------------------------------------------------------


def perch_manifest(payload: Payload, *, pinned: bool = True, **update: Any) -> ModelManifest:
    fields: dict[str, Any] = {"size_bytes": len(payload.data)}
    fields |= (
        {"sha256": payload.sha256} if pinned else {"sha256": None, "sha256_hint": payload.hint}
    )
    return catalog.perch_v2_manifest().model_copy(update=fields | update)


def make_registry(tmp_path: Path, manifest: ModelManifest | None) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "models")
    if manifest is not None:
        directory = registry.root / manifest.name / manifest.version / manifest.variant
        directory.mkdir(parents=True)
        manifest.dump(directory / MANIFEST_NAME)
    return registry


def artifact_dir(registry: ModelRegistry) -> Path:
    return registry.root / "perch-v2" / "2.0.0" / "base"


def assert_not_registered(registry: ModelRegistry, original: ModelManifest) -> None:
    directory = artifact_dir(registry)
    assert not (directory / MODEL_FILE).exists()
    assert load_manifest(directory / MANIFEST_NAME) == original
    assert not registry.resolve("perch-v2").present


# --- pull over HTTP ------------------------------------------------------------------------


def test_pull_resumes_after_the_connection_drops(
    tmp_path: Path, model: Payload, server: tuple[Served, str]
) -> None:
    served, url = server
    served.data = model.data
    served.drop_after = [3 * MB + 123]
    registry = make_registry(tmp_path, perch_manifest(model))
    seen: list[tuple[int, int | None]] = []

    artifact = pull(
        registry, "perch-v2", url=url, progress=lambda d, t: seen.append((d, t)), backoff_s=FAST
    )

    assert len(served.requests) == 2
    assert "range" not in served.requests[0]
    assert served.requests[1]["range"] == f"bytes={served.bytes_sent[0]}-"
    assert served.bytes_sent == [3 * MB + 123, len(model.data) - (3 * MB + 123)]
    registry.verify(artifact, use_cache=False)
    assert hashlib.sha256(artifact.model_path.read_bytes()).hexdigest() == model.sha256
    assert artifact.manifest.sha256 == model.sha256
    assert seen[-1] == (len(model.data), len(model.data))
    assert sorted(p.name for p in artifact.directory.iterdir()) == [MANIFEST_NAME, MODEL_FILE]


def test_attempts_that_make_progress_do_not_use_up_the_retry_budget(
    tmp_path: Path, model: Payload, server: tuple[Served, str]
) -> None:
    served, url = server
    served.data = model.data
    served.drop_every = 2 * MB
    registry = make_registry(tmp_path, perch_manifest(model))

    artifact = pull(registry, "perch-v2", url=url, max_attempts=2, backoff_s=FAST)

    assert len(served.requests) == -(-len(model.data) // (2 * MB)) > 2
    registry.verify(artifact, use_cache=False)


def test_hint_only_manifest_is_pinned_on_first_use(
    tmp_path: Path, model: Payload, server: tuple[Served, str], caplog: pytest.LogCaptureFixture
) -> None:
    served, url = server
    served.data = model.data
    registry = make_registry(tmp_path, perch_manifest(model, pinned=False))
    assert registry.resolve("perch-v2").manifest.sha256 is None

    with caplog.at_level(logging.WARNING, logger="sevensense.artifacts.fetch"):
        artifact = pull(registry, "perch-v2", url=url, backoff_s=FAST)

    on_disk = load_manifest(artifact.directory / MANIFEST_NAME)
    assert on_disk.sha256 == model.sha256
    assert on_disk.sha256_hint == model.hint
    assert registry.resolve("perch-v2").manifest.sha256 == model.sha256
    assert any("PINNING" in r.message and model.sha256 in r.message for r in caplog.records)
    registry.verify(registry.resolve("perch-v2"), use_cache=False)


def test_file_not_matching_the_hint_is_rejected(
    tmp_path: Path, model: Payload, server: tuple[Served, str]
) -> None:
    served, url = server
    served.data = model.data
    manifest = perch_manifest(model, pinned=False, sha256_hint="0000…0000")
    registry = make_registry(tmp_path, manifest)

    with pytest.raises(ChecksumMismatchError, match="partial digest"):
        pull(registry, "perch-v2", url=url, backoff_s=FAST)
    assert_not_registered(registry, manifest)


def test_wrong_sha256_is_rejected_and_quarantined(
    tmp_path: Path, model: Payload, server: tuple[Served, str]
) -> None:
    served, url = server
    served.data = model.data
    manifest = perch_manifest(model, sha256="ab" * 32)
    registry = make_registry(tmp_path, manifest)

    with pytest.raises(ChecksumMismatchError, match=model.sha256):
        pull(registry, "perch-v2", url=url, backoff_s=FAST)

    assert_not_registered(registry, manifest)
    directory = artifact_dir(registry)
    assert (directory / REJECTED_NAME).read_bytes() == model.data
    assert not (directory / STAGED_NAME).exists()
    assert not (directory / (STAGED_NAME + ".partial")).exists()

    artifact = pull(registry, "perch-v2", url=url, sha256=model.sha256.upper(), backoff_s=FAST)
    assert "range" not in served.requests[-1]
    assert artifact.manifest.sha256 == model.sha256
    registry.verify(artifact, use_cache=False)


def test_size_announced_by_the_server_differs_from_the_manifest(
    tmp_path: Path, model: Payload, server: tuple[Served, str]
) -> None:
    served, url = server
    served.data = model.data
    manifest = perch_manifest(model, size_bytes=len(model.data) + 1)
    registry = make_registry(tmp_path, manifest)

    with pytest.raises(
        DownloadError, match=rf"{len(model.data)} bytes.*expects {len(model.data) + 1}"
    ):
        pull(registry, "perch-v2", url=url, backoff_s=FAST)

    assert len(served.requests) == 1
    assert_not_registered(registry, manifest)


def test_empty_registry_falls_back_on_the_catalogue_manifest(
    tmp_path: Path, model: Payload, server: tuple[Served, str]
) -> None:
    served, url = server
    served.data = model.data
    registry = make_registry(tmp_path, None)

    with pytest.raises(DownloadError, match=str(catalog.PERCH_V2_SIZE)):
        pull(registry, "perch-v2", url=url, backoff_s=FAST)
    directory = artifact_dir(registry)
    assert not (directory / MODEL_FILE).exists()
    assert not (directory / (STAGED_NAME + ".partial")).exists()


def test_http_404_is_a_download_error_and_is_not_retried(
    tmp_path: Path, model: Payload, server: tuple[Served, str]
) -> None:
    served, url = server
    served.status = 404
    manifest = perch_manifest(model)
    registry = make_registry(tmp_path, manifest)

    with pytest.raises(DownloadError, match="HTTP 404") as info:
        pull(registry, "perch-v2", url=url, backoff_s=FAST)

    assert "127.0.0.1" in str(info.value)
    assert len(served.requests) == 1
    assert_not_registered(registry, manifest)


def test_http_503_is_retried_max_attempts_times(
    tmp_path: Path, model: Payload, server: tuple[Served, str]
) -> None:
    served, url = server
    served.status = 503
    registry = make_registry(tmp_path, perch_manifest(model))

    with pytest.raises(DownloadError, match="HTTP 503"):
        pull(registry, "perch-v2", url=url, max_attempts=3, backoff_s=FAST)
    assert len(served.requests) == 3


def test_server_ignoring_range_restarts_from_zero(
    tmp_path: Path, model: Payload, server: tuple[Served, str]
) -> None:
    served, url = server
    served.data = model.data
    served.honour_range = False
    registry = make_registry(tmp_path, perch_manifest(model))
    stale = artifact_dir(registry) / (STAGED_NAME + ".partial")
    stale.write_bytes(b"\0" * 4096)

    artifact = pull(registry, "perch-v2", url=url, backoff_s=FAST)

    assert served.requests[0]["range"] == "bytes=4096-"
    assert len(served.requests) == 1
    assert artifact.model_path.read_bytes() == model.data


def test_wrong_contract_is_rejected(
    tmp_path: Path, wrong_contract: Payload, server: tuple[Served, str]
) -> None:
    served, url = server
    served.data = wrong_contract.data
    manifest = perch_manifest(wrong_contract)
    registry = make_registry(tmp_path, manifest)

    with pytest.raises(ContractMismatchError, match="'embedding' missing"):
        pull(registry, "perch-v2", url=url, backoff_s=FAST)

    assert_not_registered(registry, manifest)
    assert (artifact_dir(registry) / REJECTED_NAME).read_bytes() == wrong_contract.data


def test_present_and_valid_artifact_is_not_downloaded_again(
    tmp_path: Path, model: Payload, server: tuple[Served, str]
) -> None:
    served, url = server
    served.data = model.data
    registry = make_registry(tmp_path, None)
    source = tmp_path / "model.onnx"
    source.write_bytes(model.data)
    registered = registry.register(source, perch_manifest(model), move=True)

    artifact = pull(registry, "perch-v2", url=url, backoff_s=FAST)

    assert served.requests == []
    assert artifact == registered


def test_present_but_corrupt_artifact_is_replaced(
    tmp_path: Path, model: Payload, server: tuple[Served, str]
) -> None:
    served, url = server
    served.data = model.data
    registry = make_registry(tmp_path, perch_manifest(model))
    corrupt = bytearray(model.data)
    corrupt[-1] ^= 0xFF
    (artifact_dir(registry) / MODEL_FILE).write_bytes(bytes(corrupt))

    artifact = pull(registry, "perch-v2", url=url, backoff_s=FAST)

    assert len(served.requests) == 1
    assert artifact.model_path.read_bytes() == model.data


# --- S3 ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint(moto_endpoint: str) -> str:
    return moto_endpoint


def s3_client(endpoint: str) -> Any:
    return aws_client("s3", endpoint, region="us-east-1")


@pytest.fixture
def bucket(s3_endpoint: str, model: Payload) -> Any:
    client = s3_client(s3_endpoint)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if BUCKET not in existing:
        client.create_bucket(Bucket=BUCKET)
    client.put_object(Bucket=BUCKET, Key="perch/perch_v2.onnx", Body=model.data)
    return client


def test_s3_import_registers_and_verifies(tmp_path: Path, model: Payload, bucket: Any) -> None:
    registry = make_registry(tmp_path, perch_manifest(model, pinned=False))

    artifact = import_artifact(
        registry,
        f"s3://{BUCKET}/perch/perch_v2.onnx",
        ref="perch-v2:2.0.0:base",
        s3_client=bucket,
        chunk_bytes=MB,
    )

    registry.verify(artifact, use_cache=False)
    assert artifact.manifest.sha256 == model.sha256
    assert artifact.model_path.read_bytes() == model.data


def test_s3_download_resumes_from_a_partial_file(
    tmp_path: Path, model: Payload, bucket: Any
) -> None:
    dest = tmp_path / "out" / "perch.onnx"
    dest.parent.mkdir()
    head = 2 * MB
    # Zeros instead of the real head: if they survive, only the tail was fetched.
    dest.with_name("perch.onnx.partial").write_bytes(b"\0" * head)

    download(
        f"s3://{BUCKET}/perch/perch_v2.onnx",
        dest,
        expected_size=len(model.data),
        s3_client=bucket,
        backoff_s=FAST,
    )

    data = dest.read_bytes()
    assert data[:head] == b"\0" * head
    assert data[head:] == model.data[head:]
    assert not dest.with_name("perch.onnx.partial").exists()


def test_s3_import_resumes_a_partial_pull(tmp_path: Path, model: Payload, bucket: Any) -> None:
    registry = make_registry(tmp_path, perch_manifest(model))
    (artifact_dir(registry) / (STAGED_NAME + ".partial")).write_bytes(model.data[: 5 * MB])

    artifact = import_artifact(
        registry, f"s3://{BUCKET}/perch/perch_v2.onnx", ref="perch-v2", s3_client=bucket
    )

    registry.verify(artifact, use_cache=False)


def test_s3_client_honours_aws_endpoint_url(
    tmp_path: Path, model: Payload, bucket: Any, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    registry = make_registry(tmp_path, perch_manifest(model))

    artifact = import_artifact(registry, f"s3://{BUCKET}/perch/perch_v2.onnx", ref="perch-v2")

    registry.verify(artifact, use_cache=False)


def test_s3_missing_key_is_a_download_error(tmp_path: Path, model: Payload, bucket: Any) -> None:
    manifest = perch_manifest(model)
    registry = make_registry(tmp_path, manifest)

    with pytest.raises(DownloadError, match=r"s3://models/perch/missing\.onnx.*no such S3 object"):
        import_artifact(
            registry, f"s3://{BUCKET}/perch/missing.onnx", ref="perch-v2", s3_client=bucket
        )
    assert_not_registered(registry, manifest)


# --- local import --------------------------------------------------------------------------


def _incoming(tmp_path: Path, payload: Payload) -> tuple[Path, Path]:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    model_path = incoming / "perch_v2.onnx"
    model_path.write_bytes(payload.data)
    manifest_path = incoming / MANIFEST_NAME
    perch_manifest(payload).dump(manifest_path)
    return model_path, manifest_path


def test_local_import_with_manifest_path(tmp_path: Path, model: Payload) -> None:
    model_path, manifest_path = _incoming(tmp_path, model)
    registry = make_registry(tmp_path, None)

    artifact = import_artifact(registry, str(model_path), manifest_path=manifest_path)

    registry.verify(artifact, use_cache=False)
    assert artifact.directory == artifact_dir(registry)
    assert model_path.read_bytes() == model.data
    assert load_manifest(artifact.directory / MANIFEST_NAME).sha256 == model.sha256


def test_file_url_import_copies_a_relative_label_file(tmp_path: Path, model: Payload) -> None:
    model_path, manifest_path = _incoming(tmp_path, model)
    labels = catalog.perch_v2_manifest().labels
    assert labels is not None
    manifest = perch_manifest(model, labels=labels.model_copy(update={"file": "labels.csv"}))
    manifest.dump(manifest_path)
    (manifest_path.parent / "labels.csv").write_text("index,label\n0,Turdus merula\n")
    registry = make_registry(tmp_path, None)

    artifact = import_artifact(registry, model_path.as_uri(), manifest_path=manifest_path)

    registry.verify(artifact, use_cache=False)
    assert (artifact.directory / "labels.csv").read_text().endswith("Turdus merula\n")


def test_local_import_of_a_wrong_file_is_rejected(tmp_path: Path, model: Payload) -> None:
    model_path, manifest_path = _incoming(tmp_path, model)
    model_path.write_bytes(model.data[:-1] + b"\0")
    registry = make_registry(tmp_path, None)

    with pytest.raises(ChecksumMismatchError):
        import_artifact(registry, str(model_path), manifest_path=manifest_path)
    assert not (artifact_dir(registry) / MODEL_FILE).exists()
    assert not (artifact_dir(registry) / MANIFEST_NAME).exists()


def test_import_without_a_manifest_explains_both_options(tmp_path: Path, model: Payload) -> None:
    model_path, _ = _incoming(tmp_path, model)
    registry = make_registry(tmp_path, None)

    with pytest.raises(ManifestError, match=r"manifest_path=.*ref="):
        import_artifact(registry, str(model_path))
    with pytest.raises(ManifestError, match=r"manifest_path=.*ref="):
        import_artifact(registry, str(model_path), ref="no-such-model")


def test_missing_local_file_is_a_download_error(tmp_path: Path, model: Payload) -> None:
    registry = make_registry(tmp_path, perch_manifest(model))

    with pytest.raises(DownloadError, match=r"missing\.onnx"):
        import_artifact(registry, str(tmp_path / "missing.onnx"), ref="perch-v2")
