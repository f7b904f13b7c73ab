"""SHA-256 of large files, streamed, with a cache keyed on the file's identity.

Every process that loads a model checks its digest; hashing BirdNET's 52 MB took 0.1–0.25 s
of each CLI run (issue 25). So a digest is also kept on disk, in ``DIGEST_CACHE`` (one small
file per model path), and trusted only while the file's device, inode, size, mtime and ctime
are unchanged: rewriting the file in place moves its ctime, which no user call can set back.
A cache that cannot be written (a read-only home) costs only the hashing; files under
``PERSIST_MIN_BYTES`` hash faster than the cache is read, and are not kept there.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Final

DIGEST_CACHE: Final = Path(
    os.environ.get("SEVENSENSE_DIGEST_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sevensense" / "digests"
)
PERSIST_MIN_BYTES: Final = 4 << 20
_CACHE: dict[tuple[str, tuple[int, ...]], str] = {}
_LOCK = threading.Lock()


def _identity(path: Path) -> tuple[str, list[int]]:
    stat = path.stat()
    return str(path.resolve()), [
        stat.st_dev,
        stat.st_ino,
        stat.st_size,
        stat.st_mtime_ns,
        stat.st_ctime_ns,
    ]


def _entry(resolved: str) -> Path:
    return DIGEST_CACHE / f"{hashlib.sha256(resolved.encode()).hexdigest()[:32]}.json"


def _from_disk(resolved: str, identity: list[int]) -> str | None:
    try:
        saved = json.loads(_entry(resolved).read_text())
    except (OSError, ValueError):
        return None
    if saved.get("path") == resolved and saved.get("identity") == identity:
        digest = saved.get("sha256")
        return digest if isinstance(digest, str) else None
    return None


def _to_disk(resolved: str, identity: list[int], digest: str) -> None:
    record = json.dumps({"path": resolved, "identity": identity, "sha256": digest})
    try:
        DIGEST_CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=DIGEST_CACHE, delete=False) as f:
            f.write(record)
        os.replace(f.name, _entry(resolved))
    except OSError:
        pass


def sha256_file(path: Path, *, use_cache: bool = True) -> str:
    """The file's digest; ``use_cache=False`` always reads the file (and refreshes the cache)."""
    resolved, identity = _identity(path)
    key = (resolved, tuple(identity))
    persist = identity[2] >= PERSIST_MIN_BYTES
    if use_cache:
        with _LOCK:
            if key in _CACHE:
                return _CACHE[key]
        saved = _from_disk(resolved, identity) if persist else None
        if saved is not None:
            with _LOCK:
                _CACHE[key] = saved
            return saved
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    with _LOCK:
        _CACHE[key] = digest
    if persist:
        _to_disk(resolved, identity, digest)
    return digest


def matches_hint(digest: str, hint: str) -> bool:
    """A published partial digest 'prefix…suffix' (or 'prefix...suffix')."""
    prefix, _, suffix = hint.replace("...", "…").partition("…")
    return digest.startswith(prefix.lower()) and digest.endswith(suffix.lower())
