"""Log output of the fraudfl processes: text for people, or one JSON object per line.

The level and format come from, in order: ``--log-level``/``--log-format``, the variables
``FRAUDFL_LOG__LEVEL``/``FRAUDFL_LOG__FORMAT``, a service config's ``[log]`` table, and the
defaults (INFO, text). JSON lines carry ``time`` (UTC, ISO 8601), ``level``, ``logger``,
``message`` and, for exceptions, ``exc_info``; log collectors (Loki, Elasticsearch) parse them
without patterns.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

LogFormat = Literal["text", "json"]
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str = "INFO", fmt: LogFormat = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    # force: some libraries (Opacus) call basicConfig on import, which would make this a no-op.
    logging.basicConfig(level=level, handlers=[handler], force=True)


def from_environment(env: Mapping[str, str]) -> tuple[str | None, LogFormat | None]:
    """``FRAUDFL_LOG__LEVEL`` and ``FRAUDFL_LOG__FORMAT`` when set to a known value."""
    level = env.get("FRAUDFL_LOG__LEVEL", "").upper() or None
    fmt = env.get("FRAUDFL_LOG__FORMAT", "").lower() or None
    if level is not None and level not in LEVELS:
        level = None
    if fmt is not None and fmt not in FORMATS:
        fmt = None
    return level, fmt  # type: ignore[return-value]
