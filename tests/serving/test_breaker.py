"""The circuit breaker's state machine (ADR-007 §5.2) on a controlled clock, and under
threads: the transitions the acceptance test sees on a real server, one by one."""

from __future__ import annotations

import threading

from sevensense.serving.model_paths.breaker import BreakerState, CircuitBreaker
from sevensense.settings import BreakerSettings


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **config: float) -> tuple[CircuitBreaker, list[tuple[str, str]]]:
    moves: list[tuple[str, str]] = []
    settings = BreakerSettings(
        failure_threshold=int(config.get("failures", 3)),
        recovery_timeout_s=config.get("timeout", 10.0),
        success_threshold=int(config.get("successes", 2)),
        half_open_max_calls=int(config.get("probes", 1)),
    )
    return (
        CircuitBreaker("p", settings, clock, lambda _, a, b: moves.append((a.value, b.value))),
        moves,
    )


def test_opens_after_n_failures_and_refuses_until_the_timeout() -> None:
    clock = Clock()
    b, moves = breaker(clock)
    for _ in range(2):
        assert b.allow()
        b.record_failure("refused")
    assert b.state is BreakerState.CLOSED
    assert b.allow()
    b.record_failure("refused")
    assert b.state is BreakerState.OPEN and moves == [("closed", "open")]
    clock.now = 9.9
    assert not b.allow() and not b.would_allow()
    assert b.snapshot()["retry_in_s"] == 0.1
    assert b.snapshot()["last_error"] == "refused"


def test_half_open_admits_one_probe_then_closes_after_m_successes() -> None:
    clock = Clock()
    b, moves = breaker(clock, failures=1, successes=2)
    b.allow()
    b.record_failure("x")
    clock.now = 10.0
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow()
    assert not b.allow()  # one probe at a time
    b.record_success()
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow()
    b.record_success()
    assert b.state is BreakerState.CLOSED
    assert moves == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_a_failed_probe_reopens_for_a_full_timeout() -> None:
    clock = Clock()
    b, _ = breaker(clock, failures=1)
    b.allow()
    b.record_failure("x")
    clock.now = 10.0
    assert b.allow()
    b.record_failure("still down")
    assert b.state is BreakerState.OPEN
    clock.now = 19.9
    assert not b.allow()
    clock.now = 20.0
    assert b.allow()


def test_success_resets_the_count_and_release_frees_a_probe() -> None:
    clock = Clock()
    b, _ = breaker(clock, failures=2)
    b.record_failure("a")
    b.record_success()
    b.record_failure("b")
    assert b.state is BreakerState.CLOSED  # not consecutive
    b.record_failure("c")
    assert b.state is BreakerState.OPEN
    clock.now = 10.0
    assert b.allow() and not b.allow()
    b.release()  # an overload tells nothing: the probe slot comes back
    assert b.allow()


def test_thread_safe_counting() -> None:
    clock = Clock()
    b, moves = breaker(clock, failures=801)
    threads = [
        threading.Thread(target=lambda: [b.record_failure("x") for _ in range(100)])
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b.snapshot()["consecutive_failures"] == 800
    assert moves == []
    b.record_failure("x")
    b.record_failure("x")
    assert moves == [("closed", "open")]  # opened exactly once, at the 801st
