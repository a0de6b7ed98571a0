"""Untrusted JSON: any depth or size ends in JSONLimitError (a ValueError), never RecursionError."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudfl.boundedjson import JSONLimitError, loads, nesting_depth

scalars = st.none() | st.booleans() | st.integers() | st.text(alphabet="[]{}\"\\ab,:", max_size=8)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                               max_size=3),
    max_leaves=40,
)


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(values)
def test_depth_is_measured_exactly_and_shallow_values_round_trip(value: Any) -> None:
    raw = json.dumps(value).encode()
    assert nesting_depth(raw) == depth_of(value)
    if depth_of(value) <= 8:
        assert loads(raw, max_bytes=len(raw), max_depth=8) == value
    else:
        with pytest.raises(JSONLimitError):
            loads(raw, max_bytes=len(raw), max_depth=8)


@settings(max_examples=50, deadline=None)
@given(st.integers(33, 200_000), st.sampled_from(["[", "{\"a\":"]), st.booleans())
def test_deep_nesting_is_a_limit_error(depth: int, opener: str, closed: bool) -> None:
    closer = "]" if opener == "[" else "}"
    raw = (opener * depth + "1" + (closer * depth if closed else "")).encode()
    with pytest.raises(JSONLimitError):
        loads(raw, max_bytes=len(raw))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_parse_or_fail_as_limit_errors(raw: bytes) -> None:
    try:
        value = loads(raw, max_bytes=1000)
    except JSONLimitError:
        return
    assert value == json.loads(raw)


def test_oversized_input_is_refused_before_parsing() -> None:
    with pytest.raises(JSONLimitError, match="exceeds the limit"):
        loads(b"[" + b"1," * 600 + b"1]", max_bytes=1000)
    # Thousands of digits: Python's int parser refuses them with a ValueError.
    with pytest.raises(JSONLimitError):
        loads(b"1" * 5000, max_bytes=10_000)
