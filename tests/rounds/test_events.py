"""The state machines report what happened as typed events (no state diffing in the services)."""

from __future__ import annotations

from pathlib import Path

from fraudfl.rounds.events import (
    BankDropped,
    FederationFinished,
    MessageRejected,
    RoundCompleted,
    RoundJoined,
    RoundStarted,
    StageEnded,
    Trained,
)
from fraudfl.rounds.messages import ANNOUNCE, SECAGG
from fraudfl.vocabulary import STAGES
from tests.rounds.federation import make_federation


def test_a_federation_reports_rounds_and_stages_in_order(tmp_path: Path) -> None:
    fed = make_federation(tmp_path, n_banks=3, rounds=1)
    fed.pump(fed.orchestrator.start(fed.now))
    events = fed.orchestrator.drain_events()
    assert fed.orchestrator.drain_events() == []  # drained once
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "RoundStarted" and kinds[-1] == "FederationFinished"
    for round_number, kind in ((0, "stats"), (1, "train")):
        started = kinds.index("RoundStarted", 0 if round_number == 0 else kinds.index(
            "RoundCompleted") + 1)
        assert events[started] == RoundStarted(round_number, kind, tuple(sorted(fed.banks)))
        completed = next(i for i, e in enumerate(events)
                         if isinstance(e, RoundCompleted) and e.round == round_number)
        stages = [e for e in events[started:completed] if isinstance(e, StageEnded)]
        # every stage once, in protocol order, all three banks in each, before the round ends
        assert [s.stage for s in stages] == list(STAGES)
        assert all(s.participants == 3 and s.dropouts == 0 for s in stages)
        done = events[completed]
        assert isinstance(done, RoundCompleted) and done.kind == kind
        assert done.model_version == round_number and set(done.survivors) == set(fed.banks)
    assert events[-1] == FederationFinished(completed=1, planned=1)


def test_a_dropout_is_an_event_and_counted_in_its_stage(tmp_path: Path) -> None:
    fed = make_federation(tmp_path, n_banks=3, rounds=1)
    fed.drop["bank_02"] = lambda reply: reply.round == 1 and reply.stage == "masked_input"
    fed.pump(fed.orchestrator.start(fed.now))
    events = fed.orchestrator.drain_events()
    assert BankDropped(1, "bank_02") in events
    masked = next(e for e in events if isinstance(e, StageEnded) and e.round == 1
                  and e.stage == "masked_input")
    assert masked.dropouts == 1 and masked.participants == 2
    assert any(isinstance(e, RoundCompleted) and e.round == 1 for e in events)


def test_rejected_messages_are_events_on_both_sides(tmp_path: Path) -> None:
    fed = make_federation(tmp_path, n_banks=3, rounds=1)
    out = fed.orchestrator.start(fed.now)
    fed.orchestrator.drain_events()
    assert fed.orchestrator.receive("bank_00", 0, SECAGG, b"\x00" * 40, fed.now) == []
    rejected = [e for e in fed.orchestrator.drain_events() if isinstance(e, MessageRejected)]
    assert len(rejected) == 1 and rejected[0].reason
    bank = fed.banks["bank_01"]
    assert bank.receive(ANNOUNCE, b"not a control payload") == []
    assert [type(e) for e in bank.drain_events()] == [MessageRejected]
    fed.pump(out)


def test_banks_report_joining_and_training(tmp_path: Path) -> None:
    fed = make_federation(tmp_path, n_banks=3, rounds=1)
    fed.pump(fed.orchestrator.start(fed.now))
    events = fed.banks["bank_00"].drain_events()
    assert events[:2] == [RoundJoined(0, "stats"), RoundJoined(1, "train")]
    trained = events[2]
    assert isinstance(trained, Trained) and trained.round == 1 and trained.examples > 0


def test_every_rejection_is_a_label_the_metrics_know(tmp_path: Path) -> None:
    """An unknown payload type (signed by the aggregator, or by an enrolled bank) is counted
    under the metrics' closed set of reasons: a label outside it would stop the service."""
    from fraudfl.monitoring.metrics import REJECT_REASONS

    fed = make_federation(tmp_path, n_banks=3, rounds=1)
    fed.orchestrator.start(fed.now)
    fed.orchestrator.drain_events()
    fed.orchestrator.receive("bank_00", 0, "x" * 10_000, b"{}", fed.now)
    bank = fed.banks["bank_01"]
    bank.receive("x", b"{}")
    events = [*fed.orchestrator.drain_events(), *bank.drain_events()]
    reasons = [e.reason for e in events if isinstance(e, MessageRejected)]
    assert len(reasons) == 2 and set(reasons) <= set(REJECT_REASONS)
