"""Per-key token buckets for the gateway.

Each gateway worker keeps its own buckets (no shared store on the request path), so the
configured rate is per key per worker. ``check`` never waits: it holds a plain lock only for
a few float operations, which is safe from the event loop, and answers at once either way.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sevensense.errors import RateLimitedError
from sevensense.settings import ServingSettings


def retry_after_header(retry_after_s: float) -> str:
    """``Retry-After`` takes whole seconds; rounding down would invite an early retry."""
    return str(max(1, math.ceil(round(retry_after_s, 6))))


@dataclass
class _Bucket:
    tokens: float
    updated: float
    rate: float
    burst: float

    def full_at(self) -> float:
        return self.updated + (self.burst - self.tokens) / self.rate


class RateLimiter:
    """Token buckets keyed by API key id: ``rate`` tokens per second, at most ``burst``.

    A request costs one token; a refused request costs nothing. A key's own rate (its
    ``ApiKeyRecord.rate_limit_per_s``) keeps the default burst *duration*: its burst is
    ``burst * rate / default_rate`` (at least 1), so a slow key cannot send a fast key's
    burst at once.

    Memory stays bounded without a sweeper: a bucket that has refilled completely is the
    same as no bucket, so buckets are kept in least-recently-used order and dropped from
    the old end once full; beyond ``max_keys`` the oldest go regardless.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be > 0, burst >= 1 and max_keys >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @classmethod
    def from_settings(
        cls, serving: ServingSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> RateLimiter:
        return cls(serving.rate_limit_per_s, serving.rate_limit_burst, clock=clock)

    def burst_for(self, rate: float) -> float:
        if rate == self.rate:
            return self.burst
        return max(1.0, self.burst * rate / self.rate)

    def __len__(self) -> int:
        return len(self._buckets)

    def _evict(self, now: float) -> None:
        buckets = self._buckets
        while buckets:
            oldest = next(iter(buckets.values()))
            if len(buckets) <= self.max_keys and oldest.full_at() > now:
                break
            buckets.popitem(last=False)

    def check(self, key_id: str, rate: float | None = None, burst: float | None = None) -> None:
        """Take one token for ``key_id`` or raise RateLimitedError with the exact wait."""
        rate = rate or self.rate
        burst = burst or self.burst_for(rate)
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key_id)
            if bucket is None:
                bucket = _Bucket(tokens=burst, updated=now, rate=rate, burst=burst)
                self._buckets[key_id] = bucket
            else:
                self._buckets.move_to_end(key_id)
                elapsed = max(0.0, now - bucket.updated)
                bucket.tokens = min(burst, bucket.tokens + elapsed * rate)
                bucket.updated, bucket.rate, bucket.burst = now, rate, burst
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                retry_after = None
            else:
                retry_after = (1.0 - bucket.tokens) / rate
            self._evict(now)
        if retry_after is not None:
            raise RateLimitedError(
                f"rate limit of {rate:g} requests/s exceeded; retry in {retry_after:.3f} s",
                retry_after_s=retry_after,
                key_id=key_id,
                limit_per_s=rate,
            )
