"""Object storage for payloads, job records and results: S3, or a local directory.

Both backends take the same relative keys ("jobs/abc.json"): no absolute keys, no empty,
``.`` or ``..`` segments, no backslashes, so a key can never leave the store's root on disk
and means the same object on either backend. Reads of a missing object raise
:class:`ObjectNotFoundError`; every other failure :class:`StorageError`. Deletes are
idempotent, as in S3.

Local writes go to a temporary file in the target directory, are fsynced, then renamed over
the key and the directory fsynced: a reader sees the old object or the new one, never half
of one, and a crash after ``put_*`` returns loses nothing.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypedDict

from sevensense import aws
from sevensense.errors import ObjectNotFoundError, ObjectTooLargeError, StorageError
from sevensense.storage.atomic import atomic_write
from sevensense.storage.s3_stream import DEFAULT_BLOCK, S3ObjectReader, s3_error

META_DIR = ".meta"
_COPY_CHUNK = 1024 * 1024


class ObjectMeta(TypedDict):
    size: int
    etag: str
    content_type: str | None
    metadata: dict[str, str]
    modified: float


class ObjectStore(Protocol):
    uri: str

    def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None: ...

    def put_file(
        self,
        key: str,
        path: Path,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None: ...

    def put_stream(
        self,
        key: str,
        fileobj: BinaryIO,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> int:
        """Copy ``fileobj`` to its end in bounded memory; returns the bytes written."""
        ...

    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes:
        """The whole object; ObjectTooLargeError past ``max_bytes`` (before reading it)."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A seekable reader that streams: fine for objects far larger than memory."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def location(self, key: str) -> str: ...

    def metadata(self, key: str) -> ObjectMeta: ...


def check_key(key: str) -> str:
    """The key itself when it is a safe relative path; ValueError otherwise."""
    if not isinstance(key, str) or not key:
        raise ValueError("an object key must be a non-empty string")
    if key.startswith("/") or "\\" in key or "\0" in key:
        raise ValueError(f"object key {key!r} must be a relative a/b/c path")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"object key {key!r} has an empty, '.' or '..' segment")
    if parts[0] == META_DIR:
        raise ValueError(f"object keys under {META_DIR}/ are reserved")
    return key


def open_store(uri: str, client: Any = None) -> ObjectStore:
    """``s3://bucket/prefix`` → S3; anything else is a local directory (created)."""
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"{uri!r}: expected s3://bucket[/prefix]")
        return S3ObjectStore(bucket, prefix, client=client)
    return LocalObjectStore(Path(uri.removeprefix("file://")))


# --- local ---------------------------------------------------------------------------------


class LocalObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create object store directory {self.root}: {exc}") from exc
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = self.root / check_key(key)
        if not path.resolve().is_relative_to(self.root):
            raise ValueError(f"object key {key!r} leads outside {self.root} (symlink)")
        return path

    def _meta_path(self, key: str) -> Path:
        return self.root / META_DIR / f"{key}.json"

    def location(self, key: str) -> str:
        return str(self._path(key))

    def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self._write(key, lambda out: out.write(data), content_type, metadata)

    def put_file(
        self,
        key: str,
        path: Path,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        try:
            with Path(path).open("rb") as source:
                self.put_stream(key, source, content_type, metadata)
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc}") from exc

    def put_stream(
        self,
        key: str,
        fileobj: BinaryIO,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> int:
        return self._write(key, lambda out: _copy(fileobj, out), content_type, metadata)

    def _write(
        self,
        key: str,
        fill: Callable[[BinaryIO], int],
        content_type: str | None,
        metadata: dict[str, str] | None,
    ) -> int:
        path = self._path(key)
        try:
            written = atomic_write(path, fill, mode=0o600)
            self._write_meta(key, path, content_type, metadata)
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc}", location=str(path)) from exc
        return written

    def _write_meta(
        self, key: str, path: Path, content_type: str | None, metadata: dict[str, str] | None
    ) -> None:
        """Metadata lives beside the tree, tagged with the data file's ETag; a crash between
        the two renames leaves a sidecar that no longer matches and is ignored."""
        meta_path = self._meta_path(key)
        if content_type is None and not metadata:
            meta_path.unlink(missing_ok=True)
            return
        record = {
            "etag": _local_etag(path.stat()),
            "content_type": content_type,
            "metadata": dict(metadata or {}),
        }
        body = json.dumps(record).encode()
        atomic_write(meta_path, body, mode=0o600)

    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes:
        with self.open(key) as source:
            if max_bytes is not None:
                size = os.fstat(source.fileno()).st_size
                if size > max_bytes:
                    raise ObjectTooLargeError(
                        f"{self.location(key)} is {size} bytes, more than {max_bytes}",
                        location=self.location(key),
                        size=size,
                    )
            try:
                return source.read()
            except OSError as exc:
                raise StorageError(f"cannot read {self.location(key)}: {exc}") from exc

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFoundError(f"no object {path}", location=str(path)) from exc
        except OSError as exc:
            raise StorageError(f"cannot open {path}: {exc}", location=str(path)) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
            self._meta_path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot delete {path}: {exc}", location=str(path)) from exc

    def metadata(self, key: str) -> ObjectMeta:
        path = self._path(key)
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise ObjectNotFoundError(f"no object {path}", location=str(path)) from exc
        if not path.is_file():
            raise ObjectNotFoundError(f"no object {path}", location=str(path))
        etag = _local_etag(stat)
        record: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(self._meta_path(key).read_bytes())
        if record.get("etag") != etag:
            record = {}
        return ObjectMeta(
            size=stat.st_size,
            etag=etag,
            content_type=record.get("content_type"),
            metadata=dict(record.get("metadata") or {}),
            modified=stat.st_mtime,
        )


def _local_etag(stat: os.stat_result) -> str:
    """Changes whenever the file is replaced (new inode) or rewritten; no hashing needed."""
    return f"{stat.st_ino:x}-{stat.st_size:x}-{stat.st_mtime_ns:x}"


def _copy(source: BinaryIO, out: BinaryIO) -> int:
    total = 0
    while chunk := source.read(_COPY_CHUNK):
        out.write(chunk)
        total += len(chunk)
    return total


# --- S3 ------------------------------------------------------------------------------------


def default_s3_client() -> Any:
    return aws.client("s3", StorageError, max_pool_connections=32)


def default_transfer() -> Any:
    """Multipart above 16 MiB in 8-MiB parts, 4 at once: an upload of any size holds about
    40 MiB, and a failed part is retried alone."""
    from boto3.s3.transfer import TransferConfig

    mib = 1024 * 1024
    return TransferConfig(
        multipart_threshold=16 * mib, multipart_chunksize=8 * mib, max_concurrency=4
    )


class _Counting(io.RawIOBase):
    """Counts what the uploader reads; looks non-seekable, so it is read once, in order.

    ``read(n)`` returns ``n`` bytes unless the source ends: s3transfer takes a short first
    read for the whole object and would then read the rest into memory in one piece.
    """

    def __init__(self, source: BinaryIO) -> None:
        super().__init__()
        self.source = source
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            data = self.source.read()
        else:
            parts: list[bytes] = []
            wanted = size
            while wanted > 0 and (chunk := self.source.read(wanted)):
                parts.append(chunk)
                wanted -= len(chunk)
            data = b"".join(parts)
        self.count += len(data)
        return data


class S3ObjectStore:
    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        transfer: Any = None,
        block_size: int = DEFAULT_BLOCK,
    ) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.client = client if client is not None else default_s3_client()
        self.transfer = transfer if transfer is not None else default_transfer()
        self.block_size = block_size

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    @contextlib.contextmanager
    def _errors(self, key: str, action: str) -> Iterator[None]:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            raise s3_error(exc, self.location(key), action) from exc

    @staticmethod
    def _extra(content_type: str | None, metadata: dict[str, str] | None) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if content_type:
            extra["ContentType"] = content_type
        if metadata:
            extra["Metadata"] = dict(metadata)
        return extra

    def put_bytes(
        self,
        key: str,
        data: bytes,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        with self._errors(key, "PUT"):
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                **self._extra(content_type, metadata),
            )

    def put_file(
        self,
        key: str,
        path: Path,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        if not Path(path).is_file():
            raise StorageError(f"cannot upload {path}: not a file")
        with self._errors(key, "upload"):
            self.client.upload_file(
                str(path),
                self.bucket,
                self._key(key),
                ExtraArgs=self._extra(content_type, metadata),
                Config=self.transfer,
            )

    def put_stream(
        self,
        key: str,
        fileobj: BinaryIO,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> int:
        counting = _Counting(fileobj)
        with self._errors(key, "upload"):
            self.client.upload_fileobj(
                counting,
                self.bucket,
                self._key(key),
                ExtraArgs=self._extra(content_type, metadata),
                Config=self.transfer,
            )
        return counting.count

    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes:
        with self._errors(key, "GET"):
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            body = response["Body"]
            try:
                size = int(response["ContentLength"])
                if max_bytes is not None and size > max_bytes:
                    raise ObjectTooLargeError(
                        f"{self.location(key)} is {size} bytes, more than {max_bytes}",
                        location=self.location(key),
                        size=size,
                    )
                return bytes(body.read())
            finally:
                body.close()

    def open(self, key: str) -> BinaryIO:
        """Buffered over :class:`S3ObjectReader`; ``.raw`` is the reader (its counters and
        :meth:`S3ObjectReader.raise_for_error`)."""
        raw = S3ObjectReader(self.client, self.bucket, self._key(key), block_size=self.block_size)
        return io.BufferedReader(raw, buffer_size=64 * 1024)

    def exists(self, key: str) -> bool:
        try:
            self.metadata(key)
        except ObjectNotFoundError:
            return False
        return True

    def delete(self, key: str) -> None:
        with self._errors(key, "DELETE"):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def metadata(self, key: str) -> ObjectMeta:
        with self._errors(key, "HEAD"):
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        return ObjectMeta(
            size=int(head["ContentLength"]),
            etag=str(head["ETag"]).strip('"'),
            content_type=head.get("ContentType"),
            metadata=dict(head.get("Metadata") or {}),
            modified=head["LastModified"].timestamp(),
        )


__all__ = [
    "LocalObjectStore",
    "ObjectMeta",
    "ObjectStore",
    "S3ObjectStore",
    "check_key",
    "open_store",
]
