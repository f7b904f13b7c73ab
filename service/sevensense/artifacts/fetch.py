"""Getting model weights into the registry: ``models pull`` and ``models import``.

Perch 2.0's export is 400 MB behind links that drop, so downloads stream to a ``.partial``
file and resume from it instead of starting over. Nothing becomes ``model.onnx`` before its
size, SHA-256 and I/O contract have been checked against the manifest: a file that fails is
renamed ``model.rejected.onnx`` beside the artifact, where no loader looks for it. The
working names all match the repository's ``.gitignore`` (``*.onnx``, ``*.partial``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type

from sevensense import aws
from sevensense.artifacts import catalog
from sevensense.artifacts.checksum import matches_hint, sha256_file
from sevensense.artifacts.manifest import MANIFEST_NAME, ModelManifest, load_manifest
from sevensense.artifacts.registry import Artifact, ModelRef, ModelRegistry, check_contract
from sevensense.errors import (
    ChecksumMismatchError,
    ConfigError,
    ContractMismatchError,
    DownloadError,
    ManifestError,
    ModelNotFoundError,
)

log = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]

STAGED_NAME = "model.unverified.onnx"
REJECTED_NAME = "model.rejected.onnx"
PARTIAL_SUFFIX = ".partial"

_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")
_BACKOFF_CAP_S = 30.0
_USER_AGENT = "sevensense-model-fetch/1"

# Catalogue entries pull can fall back on when the registry lacks the committed manifest
# (a fresh MODELS_DIR), keyed by model name.
_CATALOG: dict[str, Callable[[], ModelManifest]] = {catalog.PERCH_NAME: catalog.perch_v2_manifest}


class _TransientError(DownloadError):
    """A failure worth another attempt: the partial file is kept and resumed from."""


@dataclass
class _Attempts:
    """Failures since the partial file last grew; a download that advances is not abandoned."""

    failures: int = 0


def _display(location: str) -> str:
    """Locations go into logs and API errors; pre-signed URLs carry credentials in the query."""
    parts = urllib.parse.urlsplit(location)
    if parts.scheme not in ("http", "https"):
        return location
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _check_total(where: str, total: int | None, expected_size: int | None) -> None:
    if total is not None and expected_size is not None and total != expected_size:
        raise DownloadError(
            f"{where}: the source holds {total} bytes, the manifest expects {expected_size}",
            location=where,
            size=total,
            expected_size=expected_size,
        )


def _write_stream(
    chunks: Iterator[bytes],
    partial: Path,
    *,
    append: bool,
    total: int | None,
    chunk_bytes: int,
    progress: Progress | None,
) -> None:
    done = _size(partial) if append else 0
    # The file object's buffer is what bounds memory; the with-block flushes it when the
    # stream breaks, so every byte received survives for the next attempt.
    with partial.open("ab" if append else "wb", buffering=chunk_bytes) as f:
        for chunk in chunks:
            f.write(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
        f.flush()
        os.fsync(f.fileno())


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    match = _CONTENT_RANGE_RE.fullmatch((value or "").strip())
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return start, total


def _http_attempt(
    client: httpx.Client,
    url: str,
    partial: Path,
    *,
    expected_size: int | None,
    chunk_bytes: int,
    progress: Progress | None,
) -> int | None:
    where = _display(url)
    offset = _size(partial)
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        with client.stream("GET", url, headers=headers) as resp:
            status = resp.status_code
            if status == 416 and offset:
                _, total = _parse_content_range(resp.headers.get("content-range"))
                if total == offset:
                    return total
                partial.unlink(missing_ok=True)
                raise _TransientError(
                    f"{where}: HTTP 416 for a resume at byte {offset} (source size {total}); "
                    "discarded the partial file"
                )
            if status not in (200, 206):
                message = f"{where}: HTTP {status} {resp.reason_phrase}".rstrip()
                if status in _RETRY_STATUSES:
                    raise _TransientError(message, status=status)
                raise DownloadError(message, location=where, status=status)
            encoding = resp.headers.get("content-encoding", "identity").lower()
            if encoding != "identity":
                raise DownloadError(
                    f"{where}: server sent Content-Encoding {encoding!r}; byte ranges and "
                    "sizes would not refer to the file",
                    location=where,
                )
            if status == 206:
                start, total = _parse_content_range(resp.headers.get("content-range"))
                if start != offset:
                    partial.unlink(missing_ok=True)
                    raise _TransientError(
                        f"{where}: asked for bytes from {offset}, got Content-Range "
                        f"{resp.headers.get('content-range')!r}; restarting from zero"
                    )
            else:
                if offset:
                    log.info("%s ignored the Range request; restarting from zero", where)
                length = resp.headers.get("content-length")
                total = int(length) if length and length.isdigit() else None
            _check_total(where, total, expected_size)
            _write_stream(
                resp.iter_raw(),
                partial,
                append=status == 206,
                total=total,
                chunk_bytes=chunk_bytes,
                progress=progress,
            )
            return total
    except httpx.TransportError as exc:
        raise _TransientError(
            f"{where}: connection failed after {_size(partial)} bytes: {type(exc).__name__}: {exc}"
        ) from exc
    except httpx.HTTPError as exc:
        raise DownloadError(f"{where}: {type(exc).__name__}: {exc}", location=where) from exc


def _s3_client_error(where: str, exc: Exception) -> DownloadError:
    response: dict[str, Any] = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    if code in ("404", "NoSuchKey", "NotFound"):
        return DownloadError(f"{where}: no such S3 object (404)", location=where, status=404)
    if code == "NoSuchBucket":
        return DownloadError(f"{where}: no such S3 bucket", location=where, status=status)
    message = f"{where}: S3 error {code or 'unknown'} (HTTP {status or '?'}): {exc}"
    if status >= 500 or status in _RETRY_STATUSES or "Throttl" in code or "SlowDown" in code:
        return _TransientError(message, status=status)
    return DownloadError(message, location=where, status=status)


def _s3_attempt(
    client: Any,
    location: str,
    partial: Path,
    *,
    expected_size: int | None,
    chunk_bytes: int,
    progress: Progress | None,
) -> int | None:
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        HTTPClientError,
        IncompleteReadError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError

    parts = urllib.parse.urlsplit(location)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if not bucket or not key:
        raise DownloadError(f"{location}: expected s3://bucket/key", location=location)
    try:
        total = int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        _check_total(location, total, expected_size)
        offset = _size(partial)
        if offset > total:
            partial.unlink()
            offset = 0
        if offset == total:
            return total
        extra = {"Range": f"bytes={offset}-"} if offset else {}
        body = client.get_object(Bucket=bucket, Key=key, **extra)["Body"]
        try:
            _write_stream(
                body.iter_chunks(chunk_bytes),
                partial,
                append=bool(offset),
                total=total,
                chunk_bytes=chunk_bytes,
                progress=progress,
            )
        finally:
            body.close()
        return total
    except ClientError as exc:
        raise _s3_client_error(location, exc) from exc
    except (BotoConnectionError, HTTPClientError, IncompleteReadError) as exc:
        raise _TransientError(
            f"{location}: S3 transfer failed after {_size(partial)} bytes: {exc}"
        ) from exc
    except BotoCoreError as exc:
        raise DownloadError(f"{location}: {type(exc).__name__}: {exc}", location=location) from exc


def _local_attempt(
    source: Path,
    partial: Path,
    *,
    expected_size: int | None,
    chunk_bytes: int,
    progress: Progress | None,
) -> int | None:
    try:
        total = source.stat().st_size
        if not source.is_file():
            raise DownloadError(f"{source}: not a regular file", location=str(source))
        _check_total(str(source), total, expected_size)
        offset = _size(partial)
        if offset > total:
            offset = 0
        with source.open("rb") as src:
            src.seek(offset)
            _write_stream(
                _read_chunks(src, chunk_bytes),
                partial,
                append=bool(offset),
                total=total,
                chunk_bytes=chunk_bytes,
                progress=progress,
            )
        return total
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise DownloadError(f"{source}: cannot read: {exc}", location=str(source)) from exc
    except OSError as exc:
        raise _TransientError(f"{source}: read failed: {exc}") from exc


def _read_chunks(f: BinaryIO, size: int) -> Iterator[bytes]:
    while chunk := f.read(size):
        yield chunk


def _local_path(location: str) -> Path:
    if location.startswith("file:"):
        parts = urllib.parse.urlsplit(location)
        if parts.netloc not in ("", "localhost"):
            raise DownloadError(f"{location}: only local file:// URLs are supported")
        return Path(urllib.request.url2pathname(parts.path))
    return Path(location).expanduser()


def download(
    location: str,
    dest: Path,
    *,
    expected_size: int | None = None,
    chunk_bytes: int = 8 << 20,
    progress: Progress | None = None,
    s3_client: Any | None = None,
    http_client: httpx.Client | None = None,
    max_attempts: int = 5,
    backoff_s: float = 1.0,
) -> Path:
    """Fetch ``location`` to ``dest`` via ``dest.partial``, resuming whatever a previous run left.

    ``max_attempts`` counts failed attempts since the partial file last grew, so a long
    transfer over a link that keeps dropping is pursued while it advances and abandoned once
    it stalls. Only a complete file of the expected size is renamed to ``dest``.
    """
    if max_attempts < 1:
        raise ConfigError("max_attempts must be at least 1")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + PARTIAL_SUFFIX)
    scheme = urllib.parse.urlsplit(location).scheme.lower()
    where = _display(location)

    owned_http: httpx.Client | None = None
    attempt_once: Callable[[], int | None]
    if scheme in ("http", "https"):
        if http_client is None:
            http_client = owned_http = httpx.Client(
                follow_redirects=True,
                timeout=httpx.Timeout(60.0, connect=15.0),
                headers={"User-Agent": _USER_AGENT},
            )
        client = http_client

        def attempt_once() -> int | None:
            return _http_attempt(
                client,
                location,
                partial,
                expected_size=expected_size,
                chunk_bytes=chunk_bytes,
                progress=progress,
            )

    elif scheme == "s3":
        if s3_client is None:
            # boto3 reads AWS_ENDPOINT_URL(_S3), AWS_REGION, profiles and credentials itself.
            s3_client = aws.client("s3", DownloadError)

        def attempt_once() -> int | None:
            return _s3_attempt(
                s3_client,
                location,
                partial,
                expected_size=expected_size,
                chunk_bytes=chunk_bytes,
                progress=progress,
            )

    elif scheme in ("", "file"):
        source = _local_path(location)

        def attempt_once() -> int | None:
            return _local_attempt(
                source,
                partial,
                expected_size=expected_size,
                chunk_bytes=chunk_bytes,
                progress=progress,
            )

    else:
        raise DownloadError(
            f"{where}: unsupported location; use http(s)://, s3://, file:// or a local path",
            location=where,
        )

    state = _Attempts()

    def tracked() -> None:
        before = _size(partial)
        try:
            total = attempt_once()
            _check_complete(where, partial, total, expected_size)
        except _TransientError:
            state.failures = 1 if _size(partial) > before else state.failures + 1
            raise

    def stop(_: RetryCallState) -> bool:
        return state.failures >= max_attempts

    def wait(_: RetryCallState) -> float:
        return float(min(_BACKOFF_CAP_S, backoff_s * 2 ** (state.failures - 1)))

    def before_sleep(retry_state: RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        log.warning(
            "download of %s interrupted (%s); resuming from byte %d (%d of %d failures "
            "without progress)",
            where,
            exc,
            _size(partial),
            state.failures,
            max_attempts,
        )

    retrying = Retrying(
        retry=retry_if_exception_type(_TransientError),
        stop=stop,
        wait=wait,
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        retrying(tracked)
    except _TransientError as exc:
        raise DownloadError(
            f"{where}: gave up after {state.failures} failed attempt(s) without progress "
            f"({_size(partial)} bytes kept in {partial}): {exc}",
            location=where,
        ) from exc
    finally:
        if owned_http is not None:
            owned_http.close()

    partial.replace(dest)
    return dest


def _check_complete(
    where: str, partial: Path, total: int | None, expected_size: int | None
) -> None:
    """A short file is resumed (the stream ended early); a long one is garbage, dropped."""
    size = _size(partial)
    for label, wanted in (("the source announced", total), ("expected", expected_size)):
        if wanted is None or size == wanted:
            continue
        if size < wanted:
            raise _TransientError(f"{where}: stream ended at {size} bytes, {label} {wanted}")
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"{where}: received {size} bytes, {label} {wanted}; discarded",
            location=where,
            size=size,
            expected_size=wanted,
        )


# --- registry admission --------------------------------------------------------------------


def _normalise_digest(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    digest = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ConfigError(f"sha256 must be 64 hex digits, got {sha256!r}")
    return digest


@contextlib.contextmanager
def _artifact_lock(directory: Path) -> Iterator[None]:
    """One fetch per artifact directory at a time; a second waits, then finds it present.

    The lock is on the directory itself, so no lock file is left in the model tree.
    """
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _reject(staged: Path) -> Path:
    rejected = staged.with_name(REJECTED_NAME)
    staged.replace(rejected)
    return rejected


def _admit(
    registry: ModelRegistry,
    staged: Path,
    manifest: ModelManifest,
    *,
    expected_digest: str | None,
    location: str,
    extra_files: dict[str, Path] | None = None,
) -> Artifact:
    """Check a complete download against the manifest before it can become ``model.onnx``."""
    identity = manifest.identity
    where = _display(location)
    size = staged.stat().st_size
    if size != manifest.size_bytes:
        rejected = _reject(staged)
        raise ChecksumMismatchError(
            f"{identity}: {where} gave {size} bytes, manifest says {manifest.size_bytes}; "
            f"kept as {rejected}",
            expected=manifest.size_bytes,
            actual=size,
        )
    digest = sha256_file(staged, use_cache=False)
    pinned = expected_digest or manifest.sha256
    if pinned is not None:
        if digest != pinned:
            rejected = _reject(staged)
            raise ChecksumMismatchError(
                f"{identity}: sha256 of {where} is {digest}, expected {pinned}; kept as {rejected}",
                expected=pinned,
                actual=digest,
            )
    elif manifest.sha256_hint and matches_hint(digest, manifest.sha256_hint):
        log.warning(
            "PINNING %s on first use: sha256 %s matches the published partial digest %r; "
            "the registered manifest now records the full digest",
            identity,
            digest,
            manifest.sha256_hint,
        )
    else:
        rejected = _reject(staged)
        raise ChecksumMismatchError(
            f"{identity}: sha256 of {where} is {digest}, which does not match the published "
            f"partial digest {manifest.sha256_hint!r}; kept as {rejected}",
            expected=manifest.sha256_hint,
            actual=digest,
        )
    try:
        check_contract(staged, manifest)
    except ContractMismatchError as exc:
        rejected = _reject(staged)
        raise ContractMismatchError(
            f"{exc.message} (from {where}; kept as {rejected})", **exc.details
        ) from exc
    return registry.register(
        staged, manifest.model_copy(update={"sha256": digest}), extra_files=extra_files, move=True
    )


def _catalog_entry(ref: ModelRef) -> ModelManifest | None:
    factory = _CATALOG.get(ref.name)
    if factory is None:
        return None
    manifest = factory()
    if ref.version not in (None, manifest.version) or ref.variant not in (None, manifest.variant):
        return None
    return manifest


def _resolve_manifest(registry: ModelRegistry, ref: str) -> ModelManifest:
    parsed = ModelRef.parse(ref)
    try:
        return registry.resolve(parsed).manifest
    except ModelNotFoundError:
        manifest = _catalog_entry(parsed)
        if manifest is None:
            raise
        return manifest


def _current(registry: ModelRegistry, manifest: ModelManifest) -> Artifact:
    """Re-read the manifest on disk: another process may have pinned it while we waited."""
    directory = registry.root / manifest.name / manifest.version / manifest.variant
    if (directory / MANIFEST_NAME).is_file():
        manifest = load_manifest(directory / MANIFEST_NAME)
    return Artifact(manifest, directory)


def _require_digest(manifest: ModelManifest, expected_digest: str | None) -> None:
    if expected_digest is None and manifest.sha256 is None and not manifest.sha256_hint:
        raise ManifestError(
            f"{manifest.identity}: the manifest pins neither sha256 nor sha256_hint, so a "
            "download could not be verified; pass sha256="
        )


def _stage(
    directory: Path,
    location: str,
    manifest: ModelManifest,
    progress: Progress | None,
    download_kwargs: dict[str, Any],
) -> Path:
    staged = directory / STAGED_NAME
    partial = staged.with_name(staged.name + PARTIAL_SUFFIX)
    if staged.exists() and not partial.exists():
        # A complete but unverified download from an interrupted run: resuming it is free.
        staged.replace(partial)
    return download(
        location, staged, expected_size=manifest.size_bytes, progress=progress, **download_kwargs
    )


def pull(
    registry: ModelRegistry,
    ref: str,
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: Progress | None = None,
    **download_kwargs: Any,
) -> Artifact:
    """Make ``ref`` present and verified, downloading only when what is on disk is not.

    ``url`` overrides the manifest's source (a mirror); ``sha256`` overrides its digest.
    When the manifest only has a published partial digest, the full digest of the first
    verified download is written into the registered manifest.
    """
    expected_digest = _normalise_digest(sha256)
    manifest = _resolve_manifest(registry, ref)
    directory = registry.root / manifest.name / manifest.version / manifest.variant
    with _artifact_lock(directory):
        artifact = _current(registry, manifest)
        manifest = artifact.manifest
        if artifact.present:
            try:
                registry.verify(artifact)
                digest = sha256_file(artifact.model_path)
                if expected_digest is None or digest == expected_digest:
                    return artifact
                log.warning(
                    "%s: present file has sha256 %s, not the requested %s; downloading",
                    manifest.identity,
                    digest,
                    expected_digest,
                )
            except (ChecksumMismatchError, ContractMismatchError) as exc:
                log.warning("%s: present file fails verification (%s); downloading", ref, exc)
        location = url or manifest.source
        if not location:
            raise ManifestError(f"{manifest.identity}: the manifest names no source; pass url=")
        _require_digest(manifest, expected_digest)
        if expected_digest and manifest.sha256 and expected_digest != manifest.sha256:
            log.warning(
                "%s: sha256=%s overrides the manifest's %s",
                manifest.identity,
                expected_digest,
                manifest.sha256,
            )
        log.info("pulling %s from %s", manifest.identity, _display(location))
        staged = _stage(directory, location, manifest, progress, download_kwargs)
        return _admit(
            registry, staged, manifest, expected_digest=expected_digest, location=location
        )


def _import_manifest(
    registry: ModelRegistry, location: str, ref: str | None, manifest_path: Path | None
) -> tuple[ModelManifest, dict[str, Path]]:
    extra_files: dict[str, Path] = {}
    if manifest_path is not None:
        manifest = load_manifest(Path(manifest_path))
        if ref is not None:
            wanted = ModelRef.parse(ref)
            got = (manifest.name, manifest.version, manifest.variant)
            asked = (wanted.name, wanted.version, wanted.variant)
            if any(a is not None and a != g for a, g in zip(asked, got, strict=True)):
                raise ManifestError(
                    f"{manifest_path} describes {manifest.identity}, not {ref}",
                    path=str(manifest_path),
                )
        labels = manifest.labels
        if labels is not None and not labels.file.startswith("package:"):
            beside = Path(manifest_path).parent / labels.file
            if beside.is_file():
                extra_files[labels.file] = beside
        return manifest, extra_files
    hint = (
        f"pass manifest_path= (a manifest.json describing {location}) or ref= naming a "
        "registry entry whose manifest describes it (e.g. perch-v2:2.0.0:base)"
    )
    if ref is None:
        raise ManifestError(f"cannot import {_display(location)} without a manifest: {hint}")
    try:
        return _resolve_manifest(registry, ref), extra_files
    except ModelNotFoundError as exc:
        raise ManifestError(f"no manifest for {ref!r} ({exc.message}): {hint}") from exc


def import_artifact(
    registry: ModelRegistry,
    location: str,
    *,
    ref: str | None = None,
    manifest_path: Path | None = None,
    sha256: str | None = None,
    progress: Progress | None = None,
    **download_kwargs: Any,
) -> Artifact:
    """Register a model file obtained elsewhere, held to the same checks as a pull.

    The file is copied (or downloaded) into the artifact directory first, so a local
    source is left untouched and a rejected file never replaces a working artifact.
    """
    expected_digest = _normalise_digest(sha256)
    manifest, extra_files = _import_manifest(registry, location, ref, manifest_path)
    _require_digest(manifest, expected_digest)
    directory = registry.root / manifest.name / manifest.version / manifest.variant
    with _artifact_lock(directory):
        for name in extra_files:
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
        staged = _stage(directory, location, manifest, progress, download_kwargs)
        return _admit(
            registry,
            staged,
            manifest,
            expected_digest=expected_digest,
            location=location,
            extra_files=extra_files,
        )
