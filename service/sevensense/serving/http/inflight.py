"""The worker's bound on uploads being embedded at once.

Past the bound a request is refused at once with 503 and ``Retry-After`` rather than
queued: the model services' adaptive batches are the queue, and a request that waits here
too would only time out later, after holding its upload in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sevensense.errors import OverloadedError


class InflightLimit:
    """One per app (one event loop), so a plain counter is enough; ``count`` is what
    ``/status`` reports."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Held while the request is served; raises ``OverloadedError`` when none is free."""
        if self.count >= self.limit:
            raise OverloadedError(
                f"{self.count} requests in flight on this worker; retry shortly",
                retry_after_s=1.0,
            )
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1
