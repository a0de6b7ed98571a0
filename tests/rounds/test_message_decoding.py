"""Every control message type: nested, oversized or mistyped headers are ControlMessageErrors,
and the real orchestrator and bank participant count and skip them instead of raising."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudfl.rounds.messages import (
    ANNOUNCE,
    DECLINE,
    MAX_HEADER_BYTES,
    MODEL,
    Announcement,
    ControlMessageError,
    Decline,
    ModelInfo,
    decode,
    decode_model,
)
from tests.rounds.federation import make_federation

VALID: dict[type[Any], dict[str, Any]] = {
    Announcement: {"round": 1, "kind": "train", "participants": ["bank_00", "bank_01"]},
    Decline: {"round": 1, "reason": "error"},
    ModelInfo: {"version": 1, "round": 1, "spec": {}, "pipeline": {}, "num_params": 1,
                "sha256": "0" * 64},
}


def raw_payload(kind: int, head: bytes, blob: bytes = b"") -> bytes:
    return struct.pack(">4sBBI", b"FFRM", 1, kind, len(head)) + head + blob


def deep_json(depth: int) -> bytes:
    # Built as text: json.dumps itself recurses and cannot write what an attacker can.
    return b'{"round": 1, "detail": ' + b"[" * depth + b"1" + b"]" * depth + b"}"


@pytest.mark.parametrize("cls", list(VALID))
@pytest.mark.parametrize("depth", [100, 5_000, 200_000])
def test_deeply_nested_header_is_a_control_message_error(cls: type[Any], depth: int) -> None:
    with pytest.raises(ControlMessageError):
        decode(raw_payload(cls.KIND, deep_json(depth)), cls)


@pytest.mark.parametrize("cls", list(VALID))
def test_oversized_header_length_is_refused(cls: type[Any]) -> None:
    head = json.dumps({**VALID[cls], "x": "a" * MAX_HEADER_BYTES}).encode()
    with pytest.raises(ControlMessageError):
        decode(raw_payload(cls.KIND, head), cls)
    with pytest.raises(ControlMessageError):  # a length field pointing past the data
        decode(struct.pack(">4sBBI", b"FFRM", 1, cls.KIND, 2**32 - 1) + b"{}", cls)


junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                               max_size=3),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(list(VALID)), st.data())
def test_any_field_replaced_by_any_structure_decodes_or_is_rejected(
    cls: type[Any], data: st.DataObject
) -> None:
    body = dict(VALID[cls])
    field = data.draw(st.sampled_from([*body, "unknown"]))
    depth = data.draw(st.integers(0, 3000))
    value = json.dumps(data.draw(junk)).encode()
    # Written as text: json.dumps recurses and cannot write the depths an attacker can.
    body.pop(field, None)
    head = json.dumps(body).encode()[:-1] + b', "' + field.encode() + b'": '
    head += b"[" * depth + value + b"]" * depth + b"}"
    try:
        header, _ = decode(raw_payload(cls.KIND, head), cls)
    except ControlMessageError:
        return
    assert isinstance(header, cls)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64), st.integers(0, 3))
def test_model_payload_with_any_blob_is_decoded_or_rejected(blob: bytes, kind: int) -> None:
    head = json.dumps(VALID[ModelInfo]).encode()
    try:
        decode_model(raw_payload(kind, head, blob))
    except ControlMessageError:
        return


def test_orchestrator_and_bank_count_and_skip_nested_control_messages(tmp_path: Path) -> None:
    fed = make_federation(tmp_path, n_banks=2, rounds=1)
    orch = fed.orchestrator
    out = orch.start(fed.now)
    assert orch.round == 0 and out
    poison = {cls: raw_payload(cls.KIND, deep_json(50_000)) for cls in VALID}
    # A signed Decline from an enrolled bank, nested 50,000 deep: counted, round unaffected.
    assert orch.receive("bank_00", 0, DECLINE, poison[Decline], fed.now) == []
    assert orch.rejections["malformed"] == 1
    assert orch.current is not None and orch.current.declined == []
    bank = fed.banks["bank_01"]
    assert bank.receive(ANNOUNCE, poison[Announcement]) == []
    assert bank.receive(MODEL, poison[ModelInfo]) == []
    bank.note_batch([(ANNOUNCE, poison[Announcement]), (MODEL, poison[ModelInfo])])
    assert bank.rejections["malformed"] == 2 and bank.handled_round == -1
    # The federation still completes its round after the poison.
    fed.pump(out)
    assert orch.completed == 1
