"""API keys: hashed at rest, checked in constant time, rotated without a restart.

Only the SHA-256 of a key is ever stored, so a leaked key file or environment dump does not
leak usable keys; keys are 256-bit random tokens, so an unsalted fast hash is enough (there
is nothing to brute-force). Keys come from a JSON file (``{"keys": [ApiKeyRecord, ...]}``,
rewritten atomically by :func:`add_key` / :func:`revoke_key` or by an operator) plus
``ServingSettings.api_keys``. Every worker re-reads the file when its mtime changes, checked
at most every ``reload_s``, so issuing or revoking a key needs no restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from sevensense import aws
from sevensense.errors import (
    ConfigError,
    ForbiddenError,
    InvalidApiKeyError,
    MissingApiKeyError,
)
from sevensense.identity import PARTNER_SCOPES, ApiKeyRecord, Scope
from sevensense.settings import ServingSettings
from sevensense.storage.atomic import atomic_write, exclusive_lock, file_signature

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
KEY_PREFIX = "7s_"
DEV_KEY_ID = "dev"
DEV_KEY_FILE = "dev-api-key"
ALL_SCOPES: tuple[Scope, ...] = ("embed", "read", "admin")


class _KeyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[ApiKeyRecord]

    @model_validator(mode="after")
    def _unique_ids(self) -> _KeyFile:
        seen: set[str] = set()
        for record in self.keys:
            if record.id in seen:
                raise ValueError(f"duplicate key id {record.id!r}")
            seen.add(record.id)
        return self


def generate_key() -> str:
    """A new key: 256 random bits; the prefix makes leaked keys easy to spot in scanners."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_file_path(serving: ServingSettings) -> Path:
    return serving.api_keys_file or serving.state_dir / "api_keys.json"


def dev_key_path(serving: ServingSettings) -> Path:
    return serving.state_dir / DEV_KEY_FILE


def _read_key_file(path: Path) -> list[ApiKeyRecord] | None:
    """The file's records, None when it does not exist; ConfigError naming what is wrong."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read API key file {path}: {exc}", path=str(path)) from exc
    return parse_key_document(raw, f"API key file {path}", path=str(path))


def parse_key_document(raw: bytes | str, where: str, **details: str) -> list[ApiKeyRecord]:
    """``{"keys": [...]}`` as stored in the key file and in the Secrets Manager secret."""
    try:
        data: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{where} is not valid JSON: {exc}", **details) from exc
    try:
        return _KeyFile.model_validate(data).keys
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"{where} is malformed: {problems}", **details) from exc


class SecretKeySource:
    """Hashed keys kept in an AWS Secrets Manager secret (the deployment's key store).

    Re-read every ``refresh_s`` so rotation needs no redeploy; a failed or malformed read
    keeps the last good keys (and is logged), except at start, where it is an error: a
    gateway that cannot authenticate anyone should not report ready.
    """

    def __init__(
        self,
        secret_id: str,
        client: Any | None = None,
        *,
        refresh_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.secret_id = secret_id
        self.refresh_s = refresh_s
        self._client = client
        self._clock = clock
        self._lock = threading.Lock()
        self._records = self._fetch()
        self._fetched_at = clock()

    def _fetch(self) -> list[ApiKeyRecord]:
        if self._client is None:
            self._client = aws.client("secretsmanager", ConfigError)
        value = self._client.get_secret_value(SecretId=self.secret_id)["SecretString"]
        return parse_key_document(value, f"secret {self.secret_id}", secret=self.secret_id)

    def records(self) -> list[ApiKeyRecord]:
        with self._lock:
            if self._clock() - self._fetched_at >= self.refresh_s:
                self._fetched_at = self._clock()
                try:
                    self._records = self._fetch()
                except Exception as exc:  # network, permissions, malformed JSON
                    log.error("keeping the previous %d secret keys: %s", len(self._records), exc)
            return list(self._records)


def _write_key_file(path: Path, records: Iterable[ApiKeyRecord]) -> None:
    body = {"keys": [r.model_dump(mode="json") for r in records]}
    atomic_write(path, (json.dumps(body, indent=2) + "\n").encode(), mode=0o600)


def list_keys(path: Path) -> list[ApiKeyRecord]:
    return _read_key_file(path) or []


def _add_key_unlocked(
    path: Path,
    key_id: str,
    scopes: Sequence[str],
    rate_limit_per_s: float | None,
    replace: bool,
) -> str:
    records = _read_key_file(path) or []
    if not replace and any(r.id == key_id for r in records):
        raise ConfigError(
            f"a key with id {key_id!r} already exists in {path}; pass replace to rotate it",
            id=key_id,
            path=str(path),
        )
    key = generate_key()
    try:
        record = ApiKeyRecord.model_validate(
            {
                "id": key_id,
                "sha256": hash_key(key),
                "scopes": list(dict.fromkeys(scopes)),
                "rate_limit_per_s": rate_limit_per_s,
            }
        )
    except ValidationError as exc:
        raise ConfigError(f"invalid API key record {key_id!r}: {exc}", id=key_id) from exc
    records = [r for r in records if r.id != key_id]
    records.append(record)
    _write_key_file(path, records)
    return key


def add_key(
    path: Path,
    key_id: str,
    scopes: Sequence[str] = PARTNER_SCOPES,
    rate_limit_per_s: float | None = None,
    *,
    replace: bool = False,
) -> str:
    """Issue a key and return it in plaintext; only its hash is written, so show it once.

    ``replace=True`` rotates an existing id: the old key stops working at the next reload.
    """
    with exclusive_lock(path):
        return _add_key_unlocked(path, key_id, scopes, rate_limit_per_s, replace)


def revoke_key(path: Path, key_id: str) -> ApiKeyRecord:
    """Remove a key from the file; workers stop accepting it at their next reload."""
    with exclusive_lock(path):
        records = _read_key_file(path) or []
        kept = [r for r in records if r.id != key_id]
        if len(kept) == len(records):
            raise ConfigError(f"no key with id {key_id!r} in {path}", id=key_id, path=str(path))
        _write_key_file(path, kept)
        return next(r for r in records if r.id == key_id)


def require(record: ApiKeyRecord, scope: Scope) -> None:
    if scope not in record.scopes:
        raise ForbiddenError(
            f"key {record.id!r} lacks the {scope!r} scope",
            key_id=record.id,
            required=scope,
            scopes=list(record.scopes),
        )


def key_from_headers(authorization: str | None, x_api_key: str | None) -> str | None:
    """The presented key from ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


class KeyStore:
    """The keys one worker accepts; cheap to call on every request.

    Thread-safe. A malformed file is an error when the store is built (a deployment that
    cannot authenticate anyone should not start), but a malformed rewrite later only logs and
    keeps the last good keys, so a bad edit cannot lock every partner out at once.
    """

    def __init__(
        self,
        path: Path | None,
        extra: Sequence[ApiKeyRecord] = (),
        *,
        reload_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        secret: SecretKeySource | None = None,
    ) -> None:
        self.path = path
        self.secret = secret
        self.reload_s = reload_s
        self._extra = list(extra)
        self._clock = clock
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._from_file: list[ApiKeyRecord] = []
        self._records: list[ApiKeyRecord] = list(self._extra)
        self._checked_at = clock()
        if path is not None:
            self._signature = file_signature(path)
            self._set_file_records(_read_key_file(path) or [])

    @classmethod
    def from_settings(cls, serving: ServingSettings, *, reload_s: float = 2.0) -> KeyStore:
        secret = (
            SecretKeySource(serving.api_keys_secret, refresh_s=serving.api_keys_secret_refresh_s)
            if serving.api_keys_secret
            else None
        )
        return cls(key_file_path(serving), serving.api_keys, reload_s=reload_s, secret=secret)

    def _set_file_records(self, records: list[ApiKeyRecord]) -> None:
        self._from_file = records
        self._records = [*records, *self._extra]

    def reload(self, *, force: bool = False) -> None:
        """Re-read the file if it changed (or always, with ``force``)."""
        if self.path is None:
            return
        with self._lock:
            self._checked_at = self._clock()
            signature = file_signature(self.path)
            if signature == self._signature and not force:
                return
            try:
                records = _read_key_file(self.path) or []
            except ConfigError as exc:
                log.error("keeping the previous %d API keys: %s", len(self._from_file), exc)
                self._signature = signature
                return
            self._signature = signature
            self._set_file_records(records)
            log.info("API keys reloaded from %s: %d keys", self.path, len(records))

    def _maybe_reload(self) -> None:
        if self.path is not None and self._clock() - self._checked_at >= self.reload_s:
            self.reload()

    def _all(self) -> list[ApiKeyRecord]:
        self._maybe_reload()
        return [*self._records, *(self.secret.records() if self.secret else [])]

    def records(self) -> list[ApiKeyRecord]:
        return self._all()

    def __len__(self) -> int:
        return len(self.records())

    def lookup_hash(self, sha256: str) -> ApiKeyRecord | None:
        """The record with this hash; compares against every record, in constant time each."""
        records = self._all()
        found: ApiKeyRecord | None = None
        presented = sha256.encode("ascii")
        for record in records:
            # No early exit: the time taken must not reveal which record (if any) matched.
            if hmac.compare_digest(presented, record.sha256.encode("ascii")) and found is None:
                found = record
        return found

    def authenticate(self, presented: str | None) -> ApiKeyRecord:
        if presented is None or not presented.strip():
            raise MissingApiKeyError(
                "an API key is required (Authorization: Bearer <key> or X-API-Key)"
            )
        record = self.lookup_hash(hash_key(presented.strip()))
        if record is None:
            raise InvalidApiKeyError("the API key is not valid")
        return record

    @staticmethod
    def require(record: ApiKeyRecord, scope: Scope) -> None:
        require(record, scope)


def ensure_dev_key(serving: ServingSettings) -> str | None:
    """A key for the local quick start, so ``serve`` works out of the box yet never open.

    Only when no key is configured at all is a ``dev`` key (every scope) created, with its
    plaintext in ``<state_dir>/dev-api-key`` (0600) for the developer to copy. Deployments
    with real keys are left alone. Idempotent and safe when several workers start at once.
    """
    path = key_file_path(serving)
    dev_path = dev_key_path(serving)
    serving.state_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path):
        records = [*(_read_key_file(path) or []), *serving.api_keys]
        try:
            dev_key: str | None = dev_path.read_text().strip() or None
        except FileNotFoundError:
            dev_key = None
        if dev_key is not None:
            digest = hash_key(dev_key)
            if any(hmac.compare_digest(digest, r.sha256) for r in records):
                return dev_key
        if records:
            return None
        key = _add_key_unlocked(path, DEV_KEY_ID, ALL_SCOPES, None, replace=True)
        atomic_write(dev_path, (key + "\n").encode(), mode=0o600)
        log.warning("no API keys configured: created a dev key with every scope, see %s", dev_path)
        return key
