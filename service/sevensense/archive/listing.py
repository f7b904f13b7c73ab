"""The objects of an archive, a page at a time: a prefix listed, or an S3 Inventory read.

A listing costs one request per 1,000 keys; a bucket of 791k recordings is 792 requests,
fine. Beyond a few million keys S3 Inventory (a daily or weekly CSV report of the bucket)
is the cheaper source: its ``manifest.json`` names gzipped CSV files that are streamed
here row by row, so neither source holds more than one page in memory.

Inventory CSV keys are URL-encoded in the form style (as in S3 events) and decoded with
``unquote_plus``; rows for delete markers and non-current versions are left out.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from sevensense.errors import RequestError, StorageError

PAGE = 1000


@dataclass(frozen=True)
class ArchiveObject:
    bucket: str
    key: str
    size: int
    etag: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class ArchiveSourceError(RequestError):
    """An archive source that is not an ``s3://bucket/prefix`` or a usable inventory."""

    code = "bad_archive_source"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise ArchiveSourceError(f"{uri!r} is not an s3://bucket/prefix URI")
    return parts.netloc, parts.path.lstrip("/")


def _storage_error(what: str, exc: Exception) -> StorageError:
    return StorageError(f"{what} failed: {exc}")


def list_prefix(
    s3: Any, bucket: str, prefix: str, page: int = PAGE
) -> Iterator[list[ArchiveObject]]:
    """Pages of up to ``page`` objects in key order."""
    from botocore.exceptions import BotoCoreError, ClientError

    token: str | None = None
    while True:
        request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page}
        if token:
            request["ContinuationToken"] = token
        try:
            response = s3.list_objects_v2(**request)
        except (BotoCoreError, ClientError) as exc:
            raise _storage_error(f"LIST s3://{bucket}/{prefix}", exc) from exc
        found = [
            ArchiveObject(
                bucket, o["Key"], int(o.get("Size", 0)), str(o.get("ETag", "")).strip('"')
            )
            for o in response.get("Contents", [])
        ]
        if found:
            yield found
        token = response.get("NextContinuationToken")
        if not response.get("IsTruncated") or not token:
            return


def _get(s3: Any, bucket: str, key: str) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"]
    except (BotoCoreError, ClientError) as exc:
        raise _storage_error(f"GET s3://{bucket}/{key}", exc) from exc


def _bucket_name(arn_or_name: str) -> str:
    return arn_or_name.rsplit(":::", 1)[-1]


def inventory_pages(
    s3: Any, manifest_uri: str, prefix: str = "", page: int = PAGE
) -> Iterator[list[ArchiveObject]]:
    """Pages of the objects an inventory lists under ``prefix``, file by file."""
    bucket, key = parse_s3_uri(manifest_uri)
    body = _get(s3, bucket, key)
    try:
        manifest = json.loads(body.read())
        if manifest.get("fileFormat", "CSV").upper() != "CSV":
            raise ArchiveSourceError(
                f"{manifest_uri}: inventory format {manifest['fileFormat']!r}; only CSV is read"
            )
        columns = [c.strip() for c in str(manifest["fileSchema"]).split(",")]
        files = [str(f["key"]) for f in manifest["files"]]
        where = _bucket_name(str(manifest.get("destinationBucket") or bucket))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ArchiveSourceError(f"{manifest_uri} is not an S3 Inventory manifest: {exc}") from exc
    for needed in ("Bucket", "Key", "Size", "ETag"):
        if needed not in columns:
            raise ArchiveSourceError(
                f"{manifest_uri}: the inventory has no {needed} column (fields: {columns})"
            )
    at = {name: columns.index(name) for name in columns}
    pending: list[ArchiveObject] = []
    for file_key in files:
        with gzip.GzipFile(fileobj=_get(s3, where, file_key)) as raw:
            for row in csv.reader(io.TextIOWrapper(raw, encoding="utf-8", newline="")):
                if len(row) != len(columns) or not _current(row, at):
                    continue
                key = unquote_plus(row[at["Key"]])
                if not key.startswith(prefix):
                    continue
                size = row[at["Size"]]
                pending.append(
                    ArchiveObject(
                        row[at["Bucket"]], key, int(size or 0), row[at["ETag"]].strip('"')
                    )
                )
                if len(pending) >= page:
                    yield pending
                    pending = []
    if pending:
        yield pending


def _current(row: list[str], at: dict[str, int]) -> bool:
    if "IsDeleteMarker" in at and row[at["IsDeleteMarker"]].lower() == "true":
        return False
    return not ("IsLatest" in at and row[at["IsLatest"]].lower() == "false")
