"""SHA-256 of large files, streamed, with a cache keyed on (path, size, mtime)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

_CACHE: dict[tuple[str, int, int], str] = {}
_LOCK = threading.Lock()


def sha256_file(path: Path, *, use_cache: bool = True) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if use_cache:
        with _LOCK:
            if key in _CACHE:
                return _CACHE[key]
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    with _LOCK:
        _CACHE[key] = digest
    return digest


def matches_hint(digest: str, hint: str) -> bool:
    """A published partial digest 'prefix…suffix' (or 'prefix...suffix')."""
    prefix, _, suffix = hint.replace("...", "…").partition("…")
    return digest.startswith(prefix.lower()) and digest.endswith(suffix.lower())
