"""JSON from untrusted bytes with limits on size and nesting depth.

``json.loads`` recurses once per nesting level, so a header of ``[[[[...]]]]`` a few kilobytes
long raises ``RecursionError``, which is not a ``ValueError`` and escapes every decoder's
rejection handling (one signed message could stop a service, and stop it again after each
restart when the record is re-read). :func:`loads` measures the depth first, without recursion,
and turns every defect into :class:`JSONLimitError` (a ``ValueError``).
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

# Real headers (announcements, models with their pipeline, checkpoints) nest fewer than ten
# levels; the limit leaves room while staying far below the interpreter's recursion limit.
DEFAULT_MAX_DEPTH = 32

# A JSON string: the quote, then any run of non-quote, non-backslash bytes or escape pairs.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


class JSONLimitError(ValueError):
    """Untrusted JSON that is too large, too deep or not JSON at all."""


def nesting_depth(raw: bytes) -> int:
    """The deepest bracket nesting of ``raw`` (brackets inside strings do not count)."""
    brackets = np.frombuffer(_STRING.sub(b"", raw).translate(None, _NOT_BRACKET), np.uint8)
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)
    return int(np.cumsum(steps).max(initial=0))


def loads(raw: bytes, *, max_bytes: int, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse ``raw``; raise :class:`JSONLimitError` on any defect, never another exception."""
    if len(raw) > max_bytes:
        raise JSONLimitError(f"JSON of {len(raw)} bytes exceeds the limit of {max_bytes}")
    depth = nesting_depth(raw)
    if depth > max_depth:
        raise JSONLimitError(f"JSON nested {depth} deep exceeds the limit of {max_depth}")
    try:
        return json.loads(raw)
    except RecursionError as exc:  # cannot happen below the depth limit; kept total anyway
        raise JSONLimitError("JSON nested too deep") from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise JSONLimitError(f"not JSON: {exc}".splitlines()[0]) from exc
