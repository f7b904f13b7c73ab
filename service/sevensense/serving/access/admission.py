"""Admission: who the caller is, whether the key may do this, and one token of its rate.

One helper for every door (the HTTP front door, a route's own dependency, a stream's
opening message), so that a key is refused for the same reasons, with the same errors and
the same counters, whichever way it came in.
"""

from __future__ import annotations

from sevensense.errors import SevensenseError
from sevensense.identity import ApiKeyRecord, Scope
from sevensense.serving.access.keys import KeyStore
from sevensense.serving.access.ratelimit import RateLimiter
from sevensense.serving.telemetry.metrics import metrics


def anonymous(scope: Scope) -> ApiKeyRecord:
    """The caller when the deployment runs without keys (``auth_required`` off)."""
    return ApiKeyRecord(id="anonymous", sha256="0" * 64, scopes=[scope])


def admit(
    keys: KeyStore, limiter: RateLimiter, presented: str | None, scope: Scope
) -> ApiKeyRecord:
    """The presented key's record, charged one token; raises the auth error (401/403) or
    ``RateLimitedError`` (429). A refused key is not charged."""
    try:
        record = keys.authenticate(presented)
        keys.require(record, scope)
    except SevensenseError as exc:
        metrics().auth_failures.labels(exc.code).inc()
        raise
    try:
        limiter.check(record.id, record.rate_limit_per_s)
    except SevensenseError:
        metrics().rate_limited.labels(record.id).inc()
        raise
    return record
