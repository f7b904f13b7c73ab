"""A circuit breaker per model path (ADR-007 §5.2), safe from threads and the event loop.

Closed: every call goes through and consecutive failures are counted. At
``failure_threshold`` the breaker opens and calls are refused at once, without waiting for
timeouts on a path known to be broken. After ``recovery_timeout_s`` it half-opens and lets
``half_open_max_calls`` real calls through as probes; ``success_threshold`` successes close
it, one failure opens it again for another full timeout.

Unlike the ADR's sketch, a success while closed resets the count (failures must be
consecutive to open), and an overload (the batcher shedding load) is neither a success nor
a failure: it says nothing about whether the path works.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sevensense.settings import BreakerSettings


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


STATE_VALUE = {BreakerState.CLOSED: 0, BreakerState.OPEN: 1, BreakerState.HALF_OPEN: 2}

Listener = Callable[[str, BreakerState, BreakerState], None]


@dataclass
class CircuitBreaker:
    name: str
    config: BreakerSettings = field(default_factory=BreakerSettings)
    clock: Callable[[], float] = time.monotonic
    listener: Listener | None = None
    _state: BreakerState = BreakerState.CLOSED
    _failures: int = 0
    _successes: int = 0
    _probes: int = 0
    _opened_at: float = float("-inf")
    _last_error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._current()

    def _current(self) -> BreakerState:
        """OPEN reads as HALF_OPEN once the timeout has passed (no call needed to notice)."""
        if (
            self._state is BreakerState.OPEN
            and self.clock() - self._opened_at >= self.config.recovery_timeout_s
        ):
            self._move(BreakerState.HALF_OPEN)
        return self._state

    def _move(self, to: BreakerState) -> None:
        before = self._state
        if before is to:
            return
        self._state = to
        if to is BreakerState.OPEN:
            self._opened_at = self.clock()
        if to is not BreakerState.CLOSED:
            self._successes = 0
            self._probes = 0
        else:
            self._failures = 0
        if self.listener is not None:
            self.listener(self.name, before, to)

    def would_allow(self) -> bool:
        """Whether :meth:`allow` would say yes now, without taking a probe slot."""
        with self._lock:
            state = self._current()
            return state is BreakerState.CLOSED or (
                state is BreakerState.HALF_OPEN and self._probes < self.config.half_open_max_calls
            )

    def allow(self) -> bool:
        """Ask before a call; a True in half-open takes a probe slot that the outcome frees."""
        with self._lock:
            state = self._current()
            if state is BreakerState.CLOSED:
                return True
            if state is BreakerState.HALF_OPEN and self._probes < self.config.half_open_max_calls:
                self._probes += 1
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            state = self._current()
            if state is BreakerState.CLOSED:
                self._failures = 0
            elif state is BreakerState.HALF_OPEN:
                self._probes = max(0, self._probes - 1)
                self._successes += 1
                if self._successes >= self.config.success_threshold:
                    self._move(BreakerState.CLOSED)

    def record_failure(self, error: str) -> None:
        with self._lock:
            self._last_error = error[:300]
            state = self._current()
            if state is BreakerState.HALF_OPEN:
                self._move(BreakerState.OPEN)
            elif state is BreakerState.CLOSED:
                self._failures += 1
                if self._failures >= self.config.failure_threshold:
                    self._move(BreakerState.OPEN)
            else:  # a call admitted before the breaker opened, failing late
                self._opened_at = self.clock()

    def release(self) -> None:
        """A call that ended without telling anything (overload, cancellation)."""
        with self._lock:
            if self._state is BreakerState.HALF_OPEN:
                self._probes = max(0, self._probes - 1)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            state = self._current()
            retry_in = None
            if state is BreakerState.OPEN:
                elapsed = self.clock() - self._opened_at
                retry_in = round(max(0.0, self.config.recovery_timeout_s - elapsed), 3)
            return {
                "state": state.value,
                "consecutive_failures": self._failures,
                "half_open_successes": self._successes,
                "retry_in_s": retry_in,
                "last_error": self._last_error,
                "failure_threshold": self.config.failure_threshold,
                "success_threshold": self.config.success_threshold,
                "recovery_timeout_s": self.config.recovery_timeout_s,
            }
