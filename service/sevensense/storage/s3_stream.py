"""A seekable reader over one S3 object, for decoding multi-hour recordings in place.

libsndfile (through ``soundfile``) only needs read/seek/tell, so a recording never has to be
downloaded whole: the reader fetches aligned blocks with ranged GETs and keeps exactly one,
so memory is ``block_size`` whatever the object's size. Every GET carries ``IfMatch`` with
the ETag seen when the reader opened: if the object is replaced mid-read, S3 answers 412
and the reader fails instead of splicing two versions of the file into one decode.

soundfile calls the reader from a C callback that cannot propagate Python exceptions (cffi
prints them and libsndfile sees end of file), so a failure there looks like a short file.
The reader therefore remembers its first failure: call :meth:`S3ObjectReader.raise_for_error`
after decoding through soundfile.
"""

from __future__ import annotations

import io
from typing import Any

from sevensense.errors import ObjectNotFoundError, StorageError

DEFAULT_BLOCK = 8 * 1024 * 1024
_MISSING = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchBucket"})


def s3_error(exc: Exception, where: str, action: str) -> StorageError:
    """A botocore/boto3 failure as the storage error callers handle."""
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {})
    code = str(error.get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in _MISSING:
        what = "bucket" if code == "NoSuchBucket" else "object"
        return ObjectNotFoundError(f"{where}: no such S3 {what}", location=where)
    if code == "PreconditionFailed" or status == 412:
        return StorageError(
            f"{where} changed while being read (ETag no longer matches); start again",
            location=where,
        )
    detail = f"{code} (HTTP {status}): {error.get('Message', '')}" if code else str(exc)
    return StorageError(f"S3 {action} {where} failed: {detail}", location=where)


def _quoted(etag: str) -> str:
    return etag if etag.startswith(('"', "W/")) else f'"{etag}"'


class S3ObjectReader(io.RawIOBase):
    """Raw, seekable, read-only view of ``s3://bucket/key`` with one cached block.

    ``requests`` and ``bytes_fetched`` count the ranged GETs, so callers (and tests) can see
    that a partial read fetched a part.
    """

    mode = "rb"

    def __init__(
        self,
        client: Any,
        bucket: str,
        key: str,
        *,
        size: int | None = None,
        etag: str | None = None,
        block_size: int = DEFAULT_BLOCK,
    ) -> None:
        super().__init__()
        if block_size < 1:
            raise ValueError("block_size must be positive")
        self.client = client
        self.bucket = bucket
        self.key = key
        self.name = f"s3://{bucket}/{key}"
        self.block_size = block_size
        self.requests = 0
        self.bytes_fetched = 0
        self.error: StorageError | None = None
        if size is None or etag is None:
            head = self._head()
            size = int(head["ContentLength"]) if size is None else size
            etag = str(head["ETag"]) if etag is None else etag
        self.size = int(size)
        self.etag = _quoted(etag)
        self._pos = 0
        self._block_start = 0
        self._block = b""

    def _head(self) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=self.key))
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(exc, self.name, "HEAD") from exc

    @property
    def cached_bytes(self) -> int:
        return len(self._block)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            target = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if target < 0:
            raise OSError(f"negative seek position {target} in {self.name}")
        self._pos = target
        return target

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` as far as the object allows: libsndfile takes a short read for the
        end of the file, so stopping at a block boundary would truncate the decode."""
        self._check_open()
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view) and self._pos < self.size:
            if not self._block_start <= self._pos < self._block_start + len(self._block):
                self._load(self._pos - self._pos % self.block_size)
            offset = self._pos - self._block_start
            n = min(len(view) - filled, len(self._block) - offset)
            view[filled : filled + n] = self._block[offset : offset + n]
            filled += n
            self._pos += n
        return filled

    def _load(self, start: int) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        if self.error is not None:
            raise self.error
        end = min(start + self.block_size, self.size) - 1
        self._block = b""
        self.requests += 1
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=self.key, Range=f"bytes={start}-{end}", IfMatch=self.etag
            )
            data = response["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            self.error = s3_error(exc, self.name, "GET")
            raise self.error from exc
        if len(data) != end - start + 1:
            self.error = StorageError(
                f"{self.name}: asked for bytes {start}-{end}, got {len(data)} bytes",
                location=self.name,
            )
            raise self.error
        self.bytes_fetched += len(data)
        self._block_start, self._block = start, data

    def raise_for_error(self) -> None:
        """Raise the failure a C caller (libsndfile) swallowed, if there was one."""
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self._block = b""
        super().close()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"I/O operation on closed reader {self.name}")
