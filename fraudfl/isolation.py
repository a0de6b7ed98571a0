"""Isolating one inbound message from the service loop that handles it.

Every decoder turns malformed input into its rejection type, and the state machines reject
what they cannot use; this is the last line behind them. A message whose handling still raises
is logged with its traceback, counted (``handler_error``) and skipped, and the loop goes on: the
offsets move past it with the next checkpoint, and if it is read again after a restart it is
skipped again. No single message, from any enrolled sender, can stop a service.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

HANDLER_ERROR = "handler_error"

T = TypeVar("T")


def isolated(
    handle: Callable[[], list[T]], what: str, on_error: Callable[[str], None] | None = None
) -> list[T]:
    """``handle()``, or ``[]`` (logged, and ``on_error(HANDLER_ERROR)`` called) if it raises."""
    try:
        return handle()
    except Exception:  # see the module docstring: the loop must go on
        log.exception("handling %s raised; the message is skipped", what)
        if on_error is not None:
            on_error(HANDLER_ERROR)
        return []
