"""Token buckets: exact retry-after on a fake clock, per-key rates, bounded memory."""

from __future__ import annotations

import asyncio
import threading

import pytest

from sevensense.errors import RateLimitedError
from sevensense.serving.access.ratelimit import RateLimiter, retry_after_header
from sevensense.settings import ServingSettings


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def refused(limiter: RateLimiter, key: str, rate: float | None = None) -> float:
    with pytest.raises(RateLimitedError) as exc:
        limiter.check(key, rate)
    return exc.value.retry_after_s


def test_burst_then_exact_retry_after() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    for _ in range(3):
        limiter.check("a")
    assert refused(limiter, "a") == 0.5
    clock.now += 0.2
    assert refused(limiter, "a") == pytest.approx(0.3, abs=1e-12)
    assert refused(limiter, "a") == pytest.approx(0.3, abs=1e-12)  # refusals cost nothing
    clock.now += 0.3
    limiter.check("a")
    assert refused(limiter, "a") == 0.5
    limiter.check("b")  # other keys have their own bucket

    clock.now += 100.0  # refill caps at the burst
    for _ in range(3):
        limiter.check("a")
    assert refused(limiter, "a") == 0.5


def test_error_shape_and_header() -> None:
    limiter = RateLimiter(rate=0.25, burst=1, clock=FakeClock())
    limiter.check("slow")
    with pytest.raises(RateLimitedError) as exc:
        limiter.check("slow")
    err = exc.value
    assert (err.http_status, err.code, err.retry_after_s) == (429, "rate_limited", 4.0)
    assert err.to_dict()["details"] == {"retry_after_s": 4.0, "key_id": "slow", "limit_per_s": 0.25}
    assert retry_after_header(err.retry_after_s) == "4"
    assert retry_after_header(0.001) == "1"
    assert retry_after_header(0.0) == "1"
    assert retry_after_header(1.2) == "2"
    assert retry_after_header(3.0) == "3"
    assert retry_after_header(0.1 + 0.2 + 2.7) == "3"  # float noise does not add a second


def test_per_key_rate_keeps_the_burst_duration() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=20.0, burst=40, clock=clock)
    assert limiter.burst_for(20.0) == 40 and limiter.burst_for(1.0) == 2.0
    assert limiter.burst_for(0.1) == 1.0
    limiter.check("k", 1.0)
    limiter.check("k", 1.0)
    assert refused(limiter, "k", 1.0) == 1.0
    for _ in range(40):
        limiter.check("fast")
    assert refused(limiter, "fast") == pytest.approx(0.05)


def test_idle_buckets_are_dropped() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=10.0, burst=5, clock=clock)
    for i in range(1000):
        limiter.check(f"k{i}")
    assert len(limiter) == 1000
    clock.now += 0.5  # every bucket is full again: indistinguishable from none
    limiter.check("fresh")
    assert len(limiter) == 1

    capped = RateLimiter(rate=1.0, burst=5, clock=clock, max_keys=100)
    for i in range(1000):
        capped.check(f"k{i}")
    assert len(capped) == 100


def test_thread_safety_admits_exactly_the_burst() -> None:
    limiter = RateLimiter(rate=1.0, burst=50, clock=FakeClock())
    admitted: list[int] = []
    lock = threading.Lock()

    def hammer() -> None:
        ok = 0
        for _ in range(500):
            try:
                limiter.check("shared")
                ok += 1
            except RateLimitedError:
                pass
        with lock:
            admitted.append(ok)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 50


def test_usable_from_the_event_loop() -> None:
    serving = ServingSettings(rate_limit_per_s=5.0, rate_limit_burst=2)
    limiter = RateLimiter.from_settings(serving, clock=FakeClock())

    async def requests() -> list[bool]:
        results = []
        for _ in range(4):
            try:
                limiter.check("async")
                results.append(True)
            except RateLimitedError:
                results.append(False)
            await asyncio.sleep(0)
        return results

    assert asyncio.run(requests()) == [True, True, False, False]


def test_invalid_configuration() -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate=0.0, burst=1)
    with pytest.raises(ValueError):
        RateLimiter(rate=1.0, burst=0)
