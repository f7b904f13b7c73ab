"""Object stores: the same contract on a local directory and on S3 (moto on 127.0.0.1)."""

from __future__ import annotations

import io
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig

from sevensense.errors import ObjectNotFoundError, ObjectTooLargeError
from sevensense.storage import LocalObjectStore, ObjectStore, S3ObjectStore, open_store
from sevensense.storage.s3_stream import S3ObjectReader
from tests.conftest import aws_client

pytestmark = pytest.mark.timeout(60)

MIB = 1024 * 1024


@pytest.fixture
def s3(moto_endpoint: str) -> Any:
    return aws_client("s3", moto_endpoint)


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"store-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return name


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    s3 = request.getfixturevalue("s3")
    return S3ObjectStore(request.getfixturevalue("bucket"), "some/prefix/", client=s3)


class OneWay(io.RawIOBase):
    """A pipe-like source: readable once, in order, not seekable, no length known."""

    def __init__(self, data: bytes, fail_after: int | None = None) -> None:
        super().__init__()
        self.data, self.pos, self.fail_after = data, 0, fail_after

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.fail_after is not None and self.pos >= self.fail_after:
            raise OSError("client went away")
        n = min(len(buffer), len(self.data) - self.pos, 64 * 1024)
        buffer[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


def test_round_trip(store: ObjectStore) -> None:
    store.put_bytes(
        "jobs/a.json", b'{"a": 1}', content_type="application/json", metadata={"job": "a"}
    )

    assert store.get_bytes("jobs/a.json") == b'{"a": 1}'
    assert store.exists("jobs/a.json")
    assert not store.exists("jobs/b.json")
    meta = store.metadata("jobs/a.json")
    assert meta["size"] == 8
    assert meta["content_type"] == "application/json"
    assert meta["metadata"] == {"job": "a"}
    assert meta["etag"]

    store.put_bytes("jobs/a.json", b"replaced")
    assert store.get_bytes("jobs/a.json") == b"replaced"
    replaced = store.metadata("jobs/a.json")
    assert replaced["etag"] != meta["etag"]
    assert replaced["metadata"] == {}  # a put replaces metadata too

    store.delete("jobs/a.json")
    store.delete("jobs/a.json")  # idempotent, as in S3
    assert not store.exists("jobs/a.json")


def test_missing_objects(store: ObjectStore) -> None:
    for read in (store.get_bytes, store.open, store.metadata):
        with pytest.raises(ObjectNotFoundError):
            read("nothing/here")
    store.put_bytes("dir/file", b"x")
    with pytest.raises(ObjectNotFoundError):
        store.get_bytes("dir")  # a "directory" is not an object


def test_stream_and_file_uploads_and_a_seekable_reader(store: ObjectStore, tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 123)
    assert store.put_stream("payloads/p1", OneWay(data)) == len(data)
    source = tmp_path / "source.bin"
    source.write_bytes(data[::-1])
    store.put_file("payloads/p2", source, metadata={"origin": "file"})

    with store.open("payloads/p1") as reader:
        assert reader.seekable()
        reader.seek(2 * MIB)
        assert reader.read(1000) == data[2 * MIB : 2 * MIB + 1000]
        assert reader.tell() == 2 * MIB + 1000
        reader.seek(-10, io.SEEK_END)
        assert reader.read() == data[-10:]
    assert store.get_bytes("payloads/p2") == data[::-1]
    assert store.metadata("payloads/p2")["metadata"] == {"origin": "file"}


def test_get_bytes_refuses_an_object_over_the_limit(store: ObjectStore) -> None:
    store.put_bytes("big", b"x" * 1000)
    with pytest.raises(ObjectTooLargeError):
        store.get_bytes("big", max_bytes=999)
    assert store.get_bytes("big", max_bytes=1000) == b"x" * 1000


@pytest.mark.parametrize(
    "key", ["../escape", "/etc/passwd", "a/../../b", "a//b", "./a", "a/.", "", "a\\b", ".meta/x"]
)
def test_unsafe_keys_are_refused(store: ObjectStore, key: str) -> None:
    for action in (
        lambda: store.put_bytes(key, b"x"),
        lambda: store.get_bytes(key),
        lambda: store.delete(key),
        lambda: store.location(key),
    ):
        with pytest.raises(ValueError):
            action()


def test_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    store = LocalObjectStore(tmp_path / "root")
    (store.root / "link").symlink_to(outside)
    with pytest.raises(ValueError, match="outside"):
        store.put_bytes("link/file", b"x")
    assert list(outside.iterdir()) == []


def test_locations_and_open_store(tmp_path: Path, s3: Any, bucket: str) -> None:
    s3_store = open_store(f"s3://{bucket}/deferred/", client=s3)
    assert isinstance(s3_store, S3ObjectStore)
    assert s3_store.uri == f"s3://{bucket}/deferred"
    assert s3_store.location("jobs/x.json") == f"s3://{bucket}/deferred/jobs/x.json"
    s3_store.put_bytes("jobs/x.json", b"{}")
    assert s3.get_object(Bucket=bucket, Key="deferred/jobs/x.json")["Body"].read() == b"{}"

    local = open_store(str(tmp_path / "new" / "dir"))
    assert isinstance(local, LocalObjectStore)
    assert (tmp_path / "new" / "dir").is_dir()
    assert local.location("a/b") == str(tmp_path / "new" / "dir" / "a" / "b")


def test_a_failed_local_write_leaves_the_old_object_and_no_debris(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    store.put_bytes("payloads/p", b"old")

    with pytest.raises(Exception, match="client went away"):
        store.put_stream("payloads/p", OneWay(os.urandom(MIB), fail_after=256 * 1024))

    assert store.get_bytes("payloads/p") == b"old"
    assert sorted(p.name for p in (store.root / "payloads").iterdir()) == ["p"]


def test_local_readers_never_see_half_an_object(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    versions = [bytes([v]) * (2 * MIB) for v in (1, 2)]
    store.put_bytes("hot", versions[0])
    stop = threading.Event()

    def overwrite() -> None:
        i = 0
        while not stop.is_set():
            store.put_bytes("hot", versions[i % 2])
            i += 1

    writer = threading.Thread(target=overwrite)
    writer.start()
    try:
        for _ in range(150):
            assert store.get_bytes("hot") in versions
    finally:
        stop.set()
        writer.join()


def test_big_s3_uploads_are_multipart(s3: Any, bucket: str, tmp_path: Path) -> None:
    transfer = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB)
    store = S3ObjectStore(bucket, "big", client=s3, transfer=transfer)
    data = os.urandom(11 * MIB)
    source = tmp_path / "big.bin"
    source.write_bytes(data)

    store.put_file("file.bin", source)
    assert store.put_stream("stream.bin", OneWay(data)) == len(data)

    for key in ("file.bin", "stream.bin"):
        assert store.metadata(key)["etag"].endswith("-3")  # three parts
        assert store.get_bytes(key) == data


def test_s3_open_streams_through_the_ranged_reader(s3: Any, bucket: str) -> None:
    store = S3ObjectStore(bucket, client=s3, block_size=256 * 1024)
    data = os.urandom(4 * MIB)
    store.put_bytes("obj", data)

    with store.open("obj") as reader:
        raw = reader.raw  # type: ignore[attr-defined]
        assert isinstance(raw, S3ObjectReader)
        reader.seek(3 * MIB)
        assert reader.read(10) == data[3 * MIB : 3 * MIB + 10]
        assert raw.bytes_fetched == 256 * 1024
