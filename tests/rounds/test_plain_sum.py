"""Secure aggregation off (simulations only): the same sum in the clear, which no bank node
answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from fraudfl.config import BankNodeConfig, BankSettings
from fraudfl.rounds.events import RoundDeclined
from fraudfl.rounds.messages import DECLINE, SECAGG, Decline, decode
from fraudfl.secagg.messages import PlainInput
from fraudfl.secagg.messages import decode as decode_secagg
from tests.rounds.federation import make_federation


def test_banks_refuse_a_round_without_masking(tmp_path: Path) -> None:
    """An aggregator announcing plain sums gets declines, never an unmasked input."""
    fed = make_federation(tmp_path, n_banks=3, rounds=1,
                          agg_overrides={"secagg": {"enabled": False}})
    out = fed.orchestrator.start(fed.now)
    replies = fed.deliver(out)
    assert replies and all(r.payload_type == DECLINE for _, r in replies)
    assert {decode(r.payload, Decline)[0].reason for _, r in replies} == {"policy"}
    for bank in fed.banks.values():
        events = bank.drain_events()
        assert [e.reason for e in events if isinstance(e, RoundDeclined)] == ["plain_sum"]
    assert not any(r.payload_type == SECAGG for _, r in replies)


def test_a_bank_node_config_cannot_allow_plain_sums(tmp_path: Path) -> None:
    fed = make_federation(tmp_path, n_banks=2, rounds=1)
    cfg = next(iter(fed.bank_configs.values()))
    with pytest.raises(ValidationError, match="allow_plain_sum"):
        BankNodeConfig.model_validate({**cfg.model_dump(), "allow_plain_sum": True})


def test_simulated_banks_send_the_quantised_input_the_masked_protocol_would(
    tmp_path: Path,
) -> None:
    fed = make_federation(tmp_path, n_banks=3, rounds=1,
                          agg_overrides={"secagg": {"enabled": False}})
    for bank in fed.banks.values():  # as fraudfl simulate configures its banks
        settings = bank.config.model_dump(include=set(BankSettings.model_fields))
        bank.config = BankSettings.model_validate({**settings, "allow_plain_sum": True})
    out = fed.orchestrator.start(fed.now)
    replies = fed.deliver(out)
    inputs = [decode_secagg(r.payload).payload for _, r in replies if r.payload_type == SECAGG]
    assert len(inputs) == 3 and all(isinstance(p, PlainInput) for p in inputs)
    assert all(p.vector.dtype == np.uint32 for p in inputs)  # type: ignore[union-attr]
