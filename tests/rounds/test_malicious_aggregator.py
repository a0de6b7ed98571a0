"""Regression tests, one per attack of issue 13: a malicious aggregator built from the real
pieces (Orchestrator, SecAggServer, the real announcement codec and the aggregator's own key)
against the real bank-side code (BankParticipant and its SecAggClient). Each asserts that the
victim refuses, with the policy reason, and that nothing computed from its data leaves it:
no secure-aggregation input is set, no keys are advertised, no privacy is charged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fraudfl.data.stats import FeatureStats
from fraudfl.rounds import exact_sum
from fraudfl.rounds.messages import (
    ANNOUNCE,
    DECLINE,
    Announcement,
    Decline,
    TrainInstructions,
    decode,
    encode,
)
from fraudfl.rounds.participant import BankParticipant, Reply
from fraudfl.rounds.policy import ConsortiumPolicy, Refusal, TaskPolicy, TrainBounds
from fraudfl.secagg.errors import MessageRejected
from fraudfl.secagg.graph import graph_seed, neighbours
from fraudfl.secagg.server import SecAggServer
from tests.rounds.federation import Federation, make_federation


def forge(
    fed: Federation,
    round_number: int,
    participants: list[str],
    *,
    kind: str = "stats",
    threshold: int | None = None,
    k: int = 0,
    vector_length: int | None = None,
    **fields: Any,
) -> bytes:
    """An announcement signed into the protocol by the aggregator's real key and server."""
    n = len(participants)
    stats = kind == "stats"
    length = vector_length or (
        FeatureStats.vector_size(fed.orchestrator.schema) * exact_sum.DEFAULT_LIMBS if stats
        else 10
    )
    server = SecAggServer.create(
        fed.agg_identity, fed.allowlist, "test", round_number, sorted(participants),
        threshold=threshold or n // 2 + 1, vector_length=length, neighbours=k,
        weighted=not stats, bits=32 if stats else 16,
        clip=float(exact_sum.levels(n, 32)) if stats else 4.0, weight_max=1.0,
    )
    ann = Announcement(round=round_number, kind=kind,  # type: ignore[arg-type]
                       participants=tuple(sorted(participants)), **fields)
    return encode(ann, server.start()[0].data)


def assert_refused(bank: BankParticipant, replies: list[Reply], reason: Refusal) -> None:
    """The bank declined with ``reason`` and nothing derived from its data left it."""
    assert [r.payload_type for r in replies] == [DECLINE]
    decline, _ = decode(replies[0].payload, Decline)
    assert (decline.reason, decline.detail) == ("policy", reason.value)
    assert bank.client._update is None  # no statistics or update was ever computed
    assert bank.accountant.total_steps == 0  # no privacy charged


@pytest.fixture
def fed(tmp_path: Path) -> Federation:
    return make_federation(tmp_path, n_banks=3, rounds=1, privacy=True, target_epsilon=50.0,
                           noise_multiplier=1.0)


# -- 1. Sybil through the aggregator's own identity ---------------------------------------------


def test_sybil_with_two_participants_aggregator_and_victim(fed: Federation) -> None:
    victim = fed.banks["bank_00"]
    payload = forge(fed, 0, ["aggregator", "bank_00"], threshold=2)
    assert_refused(victim, victim.receive(ANNOUNCE, payload), Refusal.NON_BANK_PARTICIPANT)
    assert victim.client.last_round == -1  # the setup was not even answered with keys
    # Defence in depth: the secure-aggregation client alone refuses the roster too.
    setup = decode(payload, Announcement)[1]
    with pytest.raises(MessageRejected, match="not an enrolled bank"):
        victim.client.receive(setup)


def test_sybil_with_three_participants_refused_by_every_bank(fed: Federation) -> None:
    payload = forge(fed, 0, ["aggregator", "bank_00", "bank_01"], threshold=2)
    for bank_id in ("bank_00", "bank_01"):
        bank = fed.banks[bank_id]
        assert_refused(bank, bank.receive(ANNOUNCE, payload), Refusal.NON_BANK_PARTICIPANT)


def test_declaring_the_third_bank_dropped_cannot_isolate_the_victim(tmp_path: Path) -> None:
    """Three real banks; the aggregator drops bank_02's masked input so that the sum would be
    over bank_00 and bank_01 only. With min_other_banks = 2 neither confirms that survivor
    set, so no unmask share leaves either of them and the round aborts."""
    fed = make_federation(tmp_path, n_banks=3, rounds=1,
                          policy=ConsortiumPolicy(min_other_banks=2))
    fed.drop["bank_02"] = lambda reply: reply.stage == "masked_input"
    sent: list[str] = []
    deliver = fed.grid.deliver

    def spy(out: list[Any]) -> list[tuple[str, Reply]]:
        replies = deliver(out)
        sent.extend(f"{b}:{r.stage}" for b, r in replies)
        return replies

    fed.grid.deliver = spy  # type: ignore[method-assign]
    fed.pump(fed.orchestrator.start(fed.now))
    round0 = fed.orchestrator.history[0]
    assert round0.status == "aborted"
    assert not any(s.endswith(("consistency_check", "unmask")) for s in sent)
    for bank_id in ("bank_00", "bank_01"):
        bank = fed.banks[bank_id]
        assert bank.rejections.get("inconsistent", 0) >= 1 and not bank.stats_answered


# -- 2. Parameters chosen by the aggregator: downgrade of k, grinding the graph ----------------


def test_downgrade_to_secagg_plus_is_refused(tmp_path: Path) -> None:
    """The real orchestrator configured for SecAgg+ (k = 2) against banks whose policy requires
    the complete graph: every bank declines before computing anything; the round aborts."""
    fed = make_federation(tmp_path, n_banks=6, transactions=2400, rounds=1,
                          agg_overrides={"secagg": {"neighbours": 2}})
    out = fed.orchestrator.start(fed.now)
    replies = fed.deliver(out)
    assert len(replies) == 6
    for bank_id, reply in replies:
        assert_refused(fed.banks[bank_id], [reply], Refusal.GRAPH_TOO_SPARSE)


def test_threshold_below_the_policy_is_refused(fed: Federation) -> None:
    bank = fed.banks["bank_00"]
    bank.policy = ConsortiumPolicy(min_threshold_fraction=0.7)
    payload = forge(fed, 0, ["bank_00", "bank_01", "bank_02"], threshold=2)  # 2 <= 0.7 * 3
    assert_refused(bank, bank.receive(ANNOUNCE, payload), Refusal.THRESHOLD_TOO_LOW)


def test_grinding_round_numbers_for_a_colluding_neighbourhood_is_refused(tmp_path: Path) -> None:
    fed = make_federation(tmp_path, n_banks=6, transactions=2400, rounds=1,
                          policy=ConsortiumPolicy(min_neighbours=2))
    banks = sorted(fed.banks)
    victim, colluders = 0, {4, 5}
    # The grind: a round number whose graph makes the victim's only neighbours colluders.
    ground = next(r for r in range(2, 10_000)
                  if neighbours(6, 2, graph_seed("test", r, banks))[victim] == colluders)
    bank = fed.banks[banks[victim]]
    for round_number in (ground, ground - 1, ground):  # a throwaway round first does not help
        payload = forge(fed, round_number, banks, k=2, threshold=2)
        assert_refused(bank, bank.receive(ANNOUNCE, payload), Refusal.ROUND_NOT_NEXT)
    assert bank.last_announced == -1
    # The next round number is accepted (keys are advertised for it).
    replies = bank.receive(ANNOUNCE, forge(fed, 0, banks, k=2, threshold=2))
    assert [r.stage for r in replies] == ["advertise_keys"]


def test_round_sequence_survives_a_restart(fed: Federation) -> None:
    bank = fed.banks["bank_00"]
    banks = sorted(fed.banks)
    assert bank.receive(ANNOUNCE, forge(fed, 0, banks))[0].stage == "advertise_keys"
    header, blobs = bank.to_state()
    restored = BankParticipant(bank.config, bank.identity, bank.allowlist, bank.frame,
                               bank.schema, bank.accountant)
    restored.load_state(header, blobs)
    assert restored.last_announced == 0
    replies = restored.receive(ANNOUNCE, forge(fed, 7, banks))
    assert [decode(r.payload, Decline)[0].detail for r in replies] == ["round_not_next"]


# -- 3. The statistics round, repeated to subtract ----------------------------------------------


def test_a_second_statistics_round_is_refused_even_after_restart(tmp_path: Path) -> None:
    fed = make_federation(tmp_path, n_banks=3, rounds=1)
    fed.pump(fed.orchestrator.start(fed.now))
    assert fed.orchestrator.completed == 1
    bank = fed.banks["bank_00"]
    assert bank.stats_answered
    # Statistics again without bank_02: the difference of the two sums would be bank_02's
    # statistics, and with only bank_00 and bank_01 present each learns the other's.
    payload = forge(fed, bank.last_announced + 1, ["bank_00", "bank_01"], threshold=2)
    for b in (bank, _restored(bank)):
        before = b.client.last_round
        replies = b.receive(ANNOUNCE, payload)
        decline, _ = decode(replies[0].payload, Decline)
        assert decline.detail == Refusal.STATS_ALREADY_ANSWERED.value
        assert b.client.last_round == before


def _restored(bank: BankParticipant) -> BankParticipant:
    header, blobs = bank.to_state()
    out = BankParticipant(bank.config, bank.identity, bank.allowlist, bank.frame, bank.schema,
                          bank.accountant)
    out.load_state(header, blobs)
    return out


# -- 6. Draining a bank: training instructions out of bounds -------------------------------------


def _round1_announcement(fed: Federation) -> tuple[Announcement, bytes]:
    queue = fed.orchestrator.start(fed.now)
    while True:
        replies = fed.deliver(queue)
        queue = [o for b, r in replies for o in fed.orchestrator.receive(
            b, r.round, r.payload_type, r.payload, fed.now)]
        for m in queue:
            if m.payload_type == ANNOUNCE and m.round == 1:
                fed.deliver([o for o in queue if o.payload_type != ANNOUNCE])  # the model
                return decode(m.payload, Announcement)


@pytest.mark.parametrize("change", [
    {"train": {"local_epochs": 10_000}},
    {"train": {"batch_size": 1}},
    {"train": {"lr": 1e4}},
    {"train": {"mu": 1e9}},
    {"planned_rounds": 10**9},
], ids=["epochs", "batch", "lr", "mu", "rounds"])
def test_out_of_bounds_training_instructions_are_refused_before_training(
    fed: Federation, change: dict[str, Any]
) -> None:
    ann, setup = _round1_announcement(fed)
    assert ann.train is not None
    train = change.pop("train", {})
    forged = ann.model_copy(update={**change, "train": TrainInstructions(
        **{**ann.train.model_dump(), **train})})
    bank = fed.banks["bank_00"]
    replies = bank.receive(ANNOUNCE, encode(forged, setup))
    decline, _ = decode(replies[0].payload, Decline)
    assert decline.detail == Refusal.OUT_OF_BOUNDS.value
    assert bank.accountant.total_steps == 0  # nothing trained, no privacy spent


def test_model_larger_than_the_policy_and_setup_of_another_length_are_refused(
    fed: Federation,
) -> None:
    ann, setup = _round1_announcement(fed)
    bank = fed.banks["bank_00"]
    bank.policy = ConsortiumPolicy(tasks=TaskPolicy(train=TrainBounds(max_num_params=3)))
    decline, _ = decode(bank.receive(ANNOUNCE, encode(ann, setup))[0].payload, Decline)
    assert decline.detail == Refusal.OUT_OF_BOUNDS.value
    # A setup summing another number of values than the model has: refused before training.
    other = fed.banks["bank_01"]
    assert other.model_info is not None
    payload = forge(fed, ann.round, list(ann.participants), kind="train",
                    vector_length=other.model_info.num_params + 1,
                    **ann.model_dump(exclude={"round", "kind", "participants"}))
    decline, _ = decode(other.receive(ANNOUNCE, payload)[0].payload, Decline)
    assert decline.detail == Refusal.SETUP_MISMATCH.value
    assert other.accountant.total_steps == 0 and other.client.last_round == 0


# -- 4. Split views: different rounds shown to different banks -----------------------------------


def test_split_views_are_not_unmasked_together(tmp_path: Path) -> None:
    """The aggregator shows bank_00 other training instructions than bank_01 and bank_02 for
    the same round (a model or roster would do the same). The real server then unmasks on the
    majority view only: the victim is never asked for, and never sends, unmask shares, and
    since its pairwise masks were derived under its own view they do not cancel against the
    others': the round yields no sum that contains its update."""
    fed = make_federation(tmp_path, n_banks=3, rounds=1)
    ann, setup = _round1_announcement(fed)
    assert ann.train is not None
    split = ann.model_copy(update={"train": ann.train.model_copy(update={"lr": ann.train.lr / 2})})
    stages: list[tuple[str, int, str]] = []
    deliver = fed.grid.deliver

    def spy(out: list[Any]) -> list[tuple[str, Reply]]:
        replies = deliver(out)
        stages.extend((b, r.round, r.stage) for b, r in replies)
        return replies

    fed.grid.deliver = spy  # type: ignore[method-assign]
    queue = []
    for bank_id, bank in sorted(fed.banks.items()):
        for reply in bank.receive(ANNOUNCE, encode(split if bank_id == "bank_00" else ann, setup)):
            queue += fed.orchestrator.receive(bank_id, reply.round, reply.payload_type,
                                              reply.payload, fed.now)
    fed.pump(queue)
    victim_stages = {s for b, r, s in stages if b == "bank_00" and r == ann.round}
    assert "consistency_check" in victim_stages and "unmask" not in victim_stages
    record = next(r for r in fed.orchestrator.history if r.round == ann.round)
    if record.status == "completed":
        # The orchestrator's plausibility checks passed by chance: the sum it opened is still
        # not the sum of the three updates (the split pairwise masks did not cancel).
        before = next(p for info, p in fed.models if info.version == ann.model_version)
        after = next(p for info, p in fed.models if info.round == ann.round)
        plain = [fed.plain_updates(b, ann.round) for b in sorted(fed.banks)]
        assert all(u is not None for u in plain)
        fedavg = sum(w * u for u, w in plain) / sum(w for _, w in plain)  # type: ignore[misc]
        assert not np.allclose(after - before, fedavg, atol=1e-3)
    else:
        assert record.cause == "invalid_sum"


def test_inconsistent_bank_dp_instructions_are_refused_before_privacy_is_spent(
    tmp_path: Path,
) -> None:
    """Bank-level DP settings no honest aggregator sends (more expected banks than exist) are
    refused with the rest of the instructions, before a row is read or a DP step charged."""
    from fraudfl.rounds.messages import BankDPInstructions

    fed = make_federation(tmp_path, n_banks=3, rounds=1, privacy=True, target_epsilon=50.0,
                          noise_multiplier=1.0)
    ann, setup = _round1_announcement(fed)
    forged = ann.model_copy(update={"bank_dp": BankDPInstructions(
        enabled=True, clip_norm=1.0, noise_multiplier=1.0, expected_banks=9, total_banks=3)})
    bank = fed.banks["bank_00"]
    replies = bank.receive(ANNOUNCE, encode(forged, setup))
    assert [r.payload_type for r in replies] == [DECLINE]
    assert decode(replies[0].payload, Decline)[0].detail == "out_of_bounds"
    assert bank.accountant.total_steps == 0


def test_a_decline_tells_the_aggregator_the_reason_only(tmp_path: Path) -> None:
    """A budget decline's text names delta and the spent epsilon (delta defaults to
    0.1 / records): it stays in the bank's log, the aggregator gets the reason."""
    fed = make_federation(tmp_path, n_banks=3, rounds=2, privacy=True, target_epsilon=0.05,
                          noise_multiplier=0.5)
    sent: list[Reply] = []
    deliver = fed.grid.deliver

    def spy(out: list[Any]) -> list[tuple[str, Reply]]:
        replies = deliver(out)
        sent.extend(r for _, r in replies)
        return replies

    fed.grid.deliver = spy  # type: ignore[method-assign]
    fed.pump(fed.orchestrator.start(fed.now))
    declines = [decode(r.payload, Decline)[0] for r in sent if r.payload_type == DECLINE]
    assert declines and {d.reason for d in declines} == {"privacy_budget"}
    assert all(d.detail == "" for d in declines)
