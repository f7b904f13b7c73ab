"""Object storage (S3 or a local directory) and streaming reads of large S3 objects."""

from __future__ import annotations

from sevensense.storage.objects import (
    LocalObjectStore,
    ObjectMeta,
    ObjectStore,
    S3ObjectStore,
    check_key,
    open_store,
)
from sevensense.storage.s3_stream import S3ObjectReader

__all__ = [
    "LocalObjectStore",
    "ObjectMeta",
    "ObjectStore",
    "S3ObjectReader",
    "S3ObjectStore",
    "check_key",
    "open_store",
]
