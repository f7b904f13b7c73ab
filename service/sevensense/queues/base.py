"""What the worker and the gateway need from a message queue, whichever one it is.

Semantics are SQS's (at-least-once, visibility timeout, receive count, dead-letter queue
after ``max_receives``) so that the embedded queue behaves like production, and code tested
against one is right for the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Message:
    id: str
    receipt: str
    body: str
    receive_count: int
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class QueueDepth:
    visible: int
    in_flight: int
    dead: int | None = None


class MessageQueue(Protocol):
    name: str

    @property
    def max_receives(self) -> int:
        """Receives before a message goes to the dead-letter queue."""
        ...

    def send(self, body: str, attributes: dict[str, str] | None = None) -> str:
        """Durably enqueue; returns the message id."""
        ...

    def receive(
        self, max_messages: int = 1, wait_s: float = 20.0, visibility_s: int | None = None
    ) -> list[Message]:
        """Long-poll up to ``wait_s``; received messages are hidden for ``visibility_s``."""
        ...

    def delete(self, message: Message) -> None: ...

    def extend(self, message: Message, visibility_s: int) -> None:
        """Keep a message hidden ``visibility_s`` more seconds from now (long jobs)."""
        ...

    def release(self, message: Message, delay_s: int = 0) -> None:
        """Give a message back now (or after ``delay_s``), e.g. on shutdown."""
        ...

    def dead_letter(self, message: Message, code: str, reason: str) -> None:
        """Move to the dead-letter queue with the reason recorded, then delete it here."""
        ...

    def depth(self) -> QueueDepth: ...
