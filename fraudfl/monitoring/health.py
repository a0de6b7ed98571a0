"""Liveness and readiness of a service, as ``/healthz`` and ``/readyz`` report them.

The metrics endpoint answers from a side thread, so it says nothing about the service itself.
:class:`Health` is fed by the service's own threads instead:

- *alive* (``/healthz``): the main loop called :meth:`Health.beat` within ``heartbeat_s``. A
  wedged loop stops beating and the orchestrator restarts the process.
- *ready* (``/readyz``): alive, and every named check (broker reachable, topics present, keys
  loaded, ...) last reported ok, and the main loop polled the broker within ``poll_s``. A service
  that is not ready stays up (nothing a restart would fix) but alerts and rollouts see it.

Each check keeps a one-line detail (why it failed), returned in the JSON body.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The main loop polls every 0.2 s, but a bank's DP training step holds it for minutes: the
# liveness window is generous, and readiness' poll window covers one training step.
DEFAULT_HEARTBEAT_S = 900.0
DEFAULT_POLL_S = 300.0


@dataclass
class _Check:
    ok: bool
    detail: str
    at: float


class Health:
    """Thread-safe health state of one service."""

    def __init__(
        self,
        *,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        poll_s: float | None = DEFAULT_POLL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.heartbeat_s = heartbeat_s
        self.poll_s = poll_s
        self.clock = clock
        self._lock = threading.Lock()
        self._beat: float | None = None
        self._polled: float | None = None
        self._checks: dict[str, _Check] = {}
        self._state: dict[str, Any] = {}

    def beat(self) -> None:
        """The main loop went round once."""
        with self._lock:
            self._beat = self.clock()

    def polled(self) -> None:
        """The main loop finished a poll of the broker without an error."""
        with self._lock:
            self._polled = self._beat = self.clock()

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        """Record the latest result of one readiness check."""
        with self._lock:
            self._checks[name] = _Check(ok, detail, self.clock())

    def set_state(self, **values: Any) -> None:
        """Informational fields shown in both bodies (e.g. the aggregator's lifecycle state)."""
        with self._lock:
            self._state.update(values)

    def live(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            now = self.clock()
            age = None if self._beat is None else now - self._beat
            ok = age is not None and age <= self.heartbeat_s
            return ok, {"alive": ok, "heartbeat_age_s": _round(age), **self._state}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        alive, body = self.live()
        with self._lock:
            now = self.clock()
            checks = {n: {"ok": c.ok, "detail": c.detail} for n, c in sorted(self._checks.items())}
            ok = alive and bool(checks) and all(c.ok for c in self._checks.values())
            if self.poll_s is not None:
                age = None if self._polled is None else now - self._polled
                fresh = age is not None and age <= self.poll_s
                checks["last_poll"] = {
                    "ok": fresh,
                    "detail": "never" if age is None else f"{age:.1f} s ago",
                }
                ok = ok and fresh
        return ok, {**body, "ready": ok, "checks": checks}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
