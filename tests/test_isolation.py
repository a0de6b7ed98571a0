"""A handler that raises is logged, counted and skipped; the loop gets an empty reply list."""

from __future__ import annotations

import pytest

from fraudfl.isolation import HANDLER_ERROR, isolated


def test_raising_handler_is_counted_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    counted: list[str] = []

    def boom() -> list[int]:
        raise RecursionError("deep")

    assert isolated(boom, "a decline", counted.append) == []
    assert counted == [HANDLER_ERROR]
    assert "a decline" in caplog.text and "RecursionError" in caplog.text
    assert isolated(lambda: [1, 2], "fine", counted.append) == [1, 2]
    assert counted == [HANDLER_ERROR]
