"""A bank's participation logic: idempotent on re-sent announcements, restorable state."""

from __future__ import annotations

from pathlib import Path

import pytest

from fraudfl.rounds.messages import ANNOUNCE, MODEL
from fraudfl.rounds.orchestrator import Outbound
from fraudfl.rounds.participant import BankParticipant
from tests.rounds.federation import make_federation


def _round_messages(out: list[Outbound]) -> list[Outbound]:
    return [m for m in out if m.payload_type in (ANNOUNCE, MODEL)]


def test_resent_announcement_is_not_retrained_and_state_restores(tmp_path: Path) -> None:
    fed = make_federation(
        tmp_path, rounds=1, privacy=True, target_epsilon=50.0, noise_multiplier=1.0
    )
    bank = fed.banks["bank_00"]
    # Run the statistics round fully, then capture round 1's announcement.
    queue = fed.orchestrator.start(fed.now)
    announcement: Outbound | None = None
    while announcement is None:
        replies = fed.deliver(queue)
        queue = [o for b, r in replies for o in fed.orchestrator.receive(
            b, r.round, r.payload_type, r.payload, fed.now)]
        announcement = next(
            (m for m in queue if m.payload_type == ANNOUNCE and m.round == 1), None
        )
    for m in _round_messages(queue):
        if m.payload_type == MODEL:
            bank.receive(m.payload_type, m.payload)
    first = bank.receive(ANNOUNCE, announcement.payload)
    steps = bank.accountant.total_steps
    assert len(first) == 1 and steps > 0
    # The same announcement again (aggregator restart, duplicate): same reply, no training.
    again = bank.receive(ANNOUNCE, announcement.payload)
    assert [r.payload for r in again] == [r.payload for r in first]
    assert bank.accountant.total_steps == steps

    # A restored participant (new process) answers it identically too, without retraining.
    header, blobs = bank.to_state()
    restored = BankParticipant(
        bank.config, bank.identity, bank.allowlist, bank.frame, bank.schema, bank.accountant
    )
    restored.load_state(header, blobs)
    assert restored.handled_round == 1 and restored.model_version == 0
    assert [r.payload for r in restored.receive(ANNOUNCE, announcement.payload)] == [
        r.payload for r in first
    ]
    assert restored.accountant.total_steps == steps


def test_a_ledger_behind_the_checkpoint_is_refused(tmp_path: Path) -> None:
    """A lost or older privacy ledger next to a newer checkpoint would renew spent budget:
    the bank refuses to load instead."""
    from fraudfl.errors import FraudflError
    from fraudfl.privacy.accountant import PrivacyAccountant, PrivacyBudget

    fed = make_federation(tmp_path, n_banks=3, rounds=1, privacy=True, target_epsilon=50.0,
                          noise_multiplier=1.0)
    fed.pump(fed.orchestrator.start(fed.now))
    bank = fed.banks["bank_00"]
    assert bank.accountant.total_steps > 0
    header, blobs = bank.to_state()
    bank.accountant = PrivacyAccountant(budget=PrivacyBudget(50.0, 1e-4), label="bank_00")
    with pytest.raises(FraudflError, match="privacy ledger"):
        bank.load_state(header, blobs)
