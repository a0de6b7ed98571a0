"""Fault injection for tests: transports that misbehave on purpose."""

from __future__ import annotations

from fraudfl.transport.base import ForwardingTransport, Transport


class DuplicatingTransport(ForwardingTransport):
    """Produces every record ``copies`` times (at-least-once, worst case), so receivers can be
    shown to handle every message the same when it arrives twice."""

    def __init__(self, inner: Transport, copies: int = 2) -> None:
        if copies < 1:
            raise ValueError("copies must be at least 1")
        super().__init__(inner)
        self.copies = copies

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        for _ in range(self.copies):
            self.inner.send(topic, key, value)
