from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from fraudfl.data.stats import FeatureStats, compute_stats
from fraudfl.rounds.messages import ANNOUNCE, MODEL, SECAGG
from fraudfl.rounds.orchestrator import Outbound
from fraudfl.rounds.participant import BankParticipant, Reply
from fraudfl.rounds.policy import ConsortiumPolicy
from fraudfl.secagg.messages import MaskedInput, UnmaskShares
from fraudfl.secagg.messages import decode as decode_secagg
from fraudfl.secagg.quantize import Quantizer
from tests.rounds.federation import Federation


def plain_fedavg(
    fed: Federation, round_number: int, survivors: list[str], prev: np.ndarray
) -> np.ndarray:
    total = np.zeros(len(prev), dtype=np.float64)
    weights = 0.0
    for bank in survivors:
        rec = fed.plain_updates(bank, round_number)
        assert rec is not None, f"{bank} has no plain update for round {round_number}"
        update, weight = rec
        total += weight * update
        weights += weight
    return (prev.astype(np.float64) + total / weights).astype(np.float32)


def check_rounds_match_plain(fed: Federation) -> None:
    """Every published model equals plain FedAvg of the survivors' recorded updates."""
    q_models = {info.version: (info, params) for info, params in fed.models}
    assert 0 in q_models
    versions = sorted(q_models)
    for prev_v, v in itertools.pairwise(versions):
        info, params = q_models[v]
        expected = plain_fedavg(fed, info.round, list(info.participants), q_models[prev_v][1])
        n = len(info.participants)
        # Quantisation: at most n/2 steps of 1/scale per coordinate in the sums (32 bits).
        levels = ((1 << 31) - 1) // n
        step = fed.agg_config.secagg.clip_range / levels
        np.testing.assert_allclose(params, expected, rtol=0, atol=max(1e-6, 1e4 * n * step))


def test_federation_rounds_equal_plain_fedavg(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = federation_factory(rounds=2)
    fed.pump(fed.orchestrator.start(fed.now))
    orch = fed.orchestrator
    assert orch.finished and orch.completed == 2
    assert [r.status for r in orch.history] == ["completed"] * 3
    assert [info.version for info, _ in fed.models] == [0, 1, 2]
    check_rounds_match_plain(fed)
    # The pipeline was fitted from the exact sum of every bank's statistics.
    stats = sum(compute_stats(b.frame, b.schema) for b in fed.banks.values())
    assert isinstance(stats, FeatureStats)
    pipe = fed.models[0][0].pipeline
    means = [c["mean"] for c in pipe["numeric"]]
    np.testing.assert_allclose(means, stats.sums / stats.count, rtol=1e-9)


def _is(kind: type, round_number: int = 1) -> Callable[[Reply], bool]:
    """A dropout rule: the bank dies instead of sending this message of this round."""

    def rule(reply: Reply) -> bool:
        return (
            reply.round == round_number
            and reply.payload_type == SECAGG
            and isinstance(decode_secagg(reply.payload).payload, kind)
        )

    return rule


def test_bank_dies_after_masked_input(federation_factory: Callable[..., Federation]) -> None:
    fed = federation_factory(rounds=1)
    victim = "bank_01"
    fed.drop[victim] = _is(UnmaskShares)  # its masked input went out; it dies before unmasking
    fed.pump(fed.orchestrator.start(fed.now))
    rec = fed.orchestrator.history[1]
    assert rec.status == "completed"
    # Its input is in the sum: the others revealed its self-mask seed, not its mask key.
    assert victim in rec.survivors and victim in rec.dropouts
    check_rounds_match_plain(fed)


def test_bank_dies_before_masked_input(federation_factory: Callable[..., Federation]) -> None:
    fed = federation_factory(rounds=1)
    victim = "bank_02"
    fed.drop[victim] = _is(MaskedInput)
    fed.pump(fed.orchestrator.start(fed.now))
    rec = fed.orchestrator.history[-1]
    assert rec.status == "completed"
    assert victim not in rec.survivors and victim in rec.dropouts
    check_rounds_match_plain(fed)


def test_aborts_below_threshold_and_continues(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = federation_factory(rounds=1, agg_overrides={"max_consecutive_aborts": 2})
    fed.drop["bank_01"] = _is(MaskedInput)
    fed.drop["bank_02"] = _is(MaskedInput)
    fed.pump(fed.orchestrator.start(fed.now))
    assert [r.status for r in fed.orchestrator.history] == ["completed", "aborted", "aborted"]
    assert fed.orchestrator.finished and fed.orchestrator.completed == 0
    assert [info.version for info, _ in fed.models] == [0]


def test_budget_decline_does_not_wait(federation_factory: Callable[..., Federation]) -> None:
    # Two banks with enough rows that the DP sample rate is small (fast accounting).
    fed = federation_factory(
        n_banks=2, transactions=3000, rounds=3, privacy=True, target_epsilon=2.0,
        planned_rounds=1,
    )
    fed.pump(fed.orchestrator.start(fed.now))
    history = fed.orchestrator.history
    assert history[1].status == "completed"
    # Every bank calibrated its noise to spend its budget in one round, so all decline round 2,
    # which then aborts (nobody left) without waiting for a deadline.
    assert sorted(history[2].declined) == sorted(fed.banks)
    timeout = fed.agg_config.timeouts.advertise_keys
    assert history[2].status == "aborted"
    assert history[2].finished_at - history[2].started_at < timeout
    assert len(history) == 3 and fed.orchestrator.finished
    for bank in fed.banks.values():
        assert bank.last_report is not None and bank.last_report.declined
        assert 0 < bank.accountant.epsilon() <= 2.0
    assert fed.orchestrator.exhausted == set(fed.banks)


@pytest.mark.parametrize("stop_after", [1, 4, 7, 12])
def test_checkpoint_restart_anywhere(
    federation_factory: Callable[..., Federation], stop_after: int
) -> None:
    """Serialise the aggregator after a number of transitions, rebuild it and finish."""
    fed = federation_factory(rounds=2)
    transitions = 0
    queue = fed.orchestrator.start(fed.now)
    while transitions < stop_after and not fed.orchestrator.finished:
        replies = fed.deliver(queue)
        queue = []
        for bank_id, reply in replies:
            out = fed.orchestrator.receive(bank_id, reply.round, reply.payload_type,
                                           reply.payload, fed.now)
            if out:
                transitions += 1
            queue += out
    header, blobs = fed.orchestrator.to_state()
    before = (fed.orchestrator.round, fed.orchestrator.stage, fed.orchestrator.completed)
    fed.orchestrator = fed.new_orchestrator()
    fed.orchestrator.load_state(header, blobs)
    assert (fed.orchestrator.round, fed.orchestrator.stage, fed.orchestrator.completed) == before
    # Messages in flight at the crash are lost; the restarted aggregator re-sends its last ones.
    fed.pump(fed.orchestrator.restart(fed.now))
    orch = fed.orchestrator
    assert orch.finished and orch.completed == 2
    versions = [info.version for info, _ in fed.models]
    assert sorted(set(versions)) == [0, *[r.round for r in orch.history if r.kind == "train"
                                          and r.status == "completed"]]
    check_rounds_match_plain(fed)


def test_bank_level_dp_is_accounted(federation_factory: Callable[..., Federation]) -> None:
    """With bank-level DP each bank clips and noises its update (weight 1), the sum still
    equals plain FedAvg of those noised updates, and the federation epsilon grows per round."""
    fed = federation_factory(
        rounds=2, agg_overrides={"bank_dp": {"enabled": True, "clip_norm": 0.5,
                                             "noise_multiplier": 1.0}},
    )
    fed.pump(fed.orchestrator.start(fed.now))
    train = [r for r in fed.orchestrator.history if r.kind == "train"]
    eps = [r.federation_epsilon for r in train]
    assert all(e is not None and e > 0 for e in eps)
    assert eps[1] > eps[0]  # type: ignore[operator]
    for rec in train:
        for bank in rec.survivors:
            recorded = fed.plain_updates(bank, rec.round)
            assert recorded is not None and recorded[1] == 1.0
    check_rounds_match_plain(fed)
    assert [info.federation_epsilon for info, _ in fed.models[1:]] == eps


def _late_bank(fed: Federation) -> BankParticipant:
    """bank_02 misses every round; the others run the federation's two rounds."""
    late = fed.banks["bank_02"]
    fed.dead.add("bank_02")
    fed.pump(fed.orchestrator.start(fed.now))
    assert fed.orchestrator.completed == 2
    return late


def _catch_up(bank: BankParticipant, batches: list[list[Outbound]]) -> list[Reply]:
    """Deliver batches as the bank node does: note the batch, then models first."""
    replies: list[Reply] = []
    for batch in batches:
        bank.note_batch([(m.payload_type, m.payload) for m in batch])
        ordered = sorted(batch, key=lambda m: m.payload_type != MODEL)
        replies += [r for m in ordered for r in bank.receive(m.payload_type, m.payload)]
    return replies


def test_late_bank_skips_stale_rounds(federation_factory: Callable[..., Federation]) -> None:
    """A bank that reads the topics only after the rounds ran (started late, or down) must not
    train for rounds that already produced a model: that would spend privacy for nothing."""
    fed = federation_factory(rounds=2, privacy=True, target_epsilon=50.0, noise_multiplier=1.0)
    late = _late_bank(fed)
    control = [m for m in fed.transcript if m.topic != "models"]
    models = [m for m in fed.transcript if m.topic == "models"]
    assert _catch_up(late, [models + control]) == []
    assert late.accountant.total_steps == 0
    assert late.model_version == 2


@pytest.mark.parametrize("control_first", [True, False], ids=["control_first", "models_first"])
def test_late_bank_skips_stale_rounds_across_polls(
    federation_factory: Callable[..., Federation], control_first: bool
) -> None:
    """The backlog arrives topic by topic in separate polls. Control first: round 2's
    announcement waits for model v1, and model v1 arrives in the next poll before v2 (the
    bank used to train for round 2 then); the control topic already showed round 2 past its
    advertise stage. Models first: the models show every round is over."""
    fed = federation_factory(rounds=2, privacy=True, target_epsilon=50.0, noise_multiplier=1.0)
    late = _late_bank(fed)
    control = [m for m in fed.transcript if m.topic != "models"]
    models = [m for m in fed.transcript if m.topic == "models"]
    batches = [control, models] if control_first else [models, control]
    assert _catch_up(late, batches) == []
    assert late.accountant.total_steps == 0 and late.handled_round == -1
    assert late.model_version == 2 and late.pending is None
    # Per message, too: a fresh bank_02 reading each model in its own poll.
    fresh = BankParticipant(late.config, late.identity, late.allowlist, late.frame,
                            late.schema, late.accountant)
    assert _catch_up(fresh, [control] + [[m] for m in models]) == []
    assert late.accountant.total_steps == 0 and fresh.model_version == 2


def test_unresumable_round_is_aborted_and_next_starts(
    federation_factory: Callable[..., Federation],
) -> None:
    """A checkpoint whose protocol state cannot be restored: that round is recorded as aborted
    (model and completed rounds kept) and the restarted aggregator starts the next round."""
    fed = federation_factory(rounds=2)
    queue = fed.orchestrator.start(fed.now)
    while fed.orchestrator.completed < 1 or fed.orchestrator.server is None:
        replies = fed.deliver(queue)
        queue = [o for b, r in replies for o in fed.orchestrator.receive(
            b, r.round, r.payload_type, r.payload, fed.now)]
    header, blobs = fed.orchestrator.to_state()
    broken_round = header["round"]
    header["server"]["version"] = 99  # e.g. written by an incompatible version
    model_before = fed.orchestrator.params
    fed.orchestrator = fed.new_orchestrator()
    fed.orchestrator.load_state(header, blobs)
    assert fed.orchestrator.history[-1].status == "aborted"
    np.testing.assert_array_equal(fed.orchestrator.params, model_before)
    fed.pump(fed.orchestrator.restart(fed.now))
    statuses = {r.round: r.status for r in fed.orchestrator.history}
    assert statuses[broken_round] == "aborted"
    assert fed.orchestrator.completed == 2
    assert [r.round for r in fed.orchestrator.history] == sorted(statuses)
    check_rounds_match_plain(fed)


def test_secagg_plus_sparse_graph(federation_factory: Callable[..., Federation]) -> None:
    """SecAgg+ (each bank masks with k neighbours only) gives the same sums."""
    fed = federation_factory(
        n_banks=6, transactions=2400, rounds=1, agg_overrides={"secagg": {"neighbours": 2}},
        policy=ConsortiumPolicy(min_neighbours=2),  # the banks' policy must allow SecAgg+
    )
    fed.pump(fed.orchestrator.start(fed.now))
    assert fed.orchestrator.completed == 1
    assert fed.orchestrator.threshold(6) == 2
    check_rounds_match_plain(fed)


@pytest.mark.parametrize(
    ("claimed_weight", "dropout"), [(-2.0, False), (2.5, True)], ids=["negative", "above"]
)
def test_implausible_weight_sum_aborts_the_round(
    federation_factory: Callable[..., Federation], monkeypatch: pytest.MonkeyPatch,
    claimed_weight: float, dropout: bool,
) -> None:
    """bank_00 masks a weight no honest bank can send (the server cannot see it in the masked
    vector): the unmasked weight sum is negative, or (with bank_02 dropped, two survivors)
    above 2. The round is aborted as ``invalid_sum`` without touching the model, and the
    next one runs."""
    original = Quantizer.encode_weighted
    attacks = []

    def malicious_once(self: Quantizer, update: np.ndarray, weight: float) -> np.ndarray:
        encoded = original(self, update, weight)
        if not attacks:  # the first bank to encode in round 1, bank_00
            attacks.append(weight)
            forged = np.array([round(claimed_weight * self.weight_scale)], dtype=np.int64)
            encoded[-1] = self._to_ring(forged)[0]
        return encoded

    monkeypatch.setattr(Quantizer, "encode_weighted", malicious_once)
    fed = federation_factory(rounds=1)
    if dropout:
        fed.drop["bank_02"] = _is(MaskedInput)
    fed.pump(fed.orchestrator.start(fed.now))
    history = fed.orchestrator.history
    assert attacks and [r.status for r in history] == ["completed", "aborted", "completed"]
    assert history[1].cause == "invalid_sum" and "weight sum" in history[1].reason
    # The refused round produced no model; the next one is plain FedAvg of honest updates.
    assert [info.version for info, _ in fed.models] == [0, 2]
    check_rounds_match_plain(fed)


def test_bank_level_dp_averages_over_the_announced_banks(
    federation_factory: Callable[..., Federation],
) -> None:
    """DP-FedAvg's fixed denominator: with a bank gone before its masked input, the noised sum
    of the two survivors is divided by the three banks announced (as the simulator does), so
    the released model does not depend on how many banks took part."""
    fed = federation_factory(
        rounds=1, agg_overrides={"bank_dp": {"enabled": True, "clip_norm": 0.5,
                                             "noise_multiplier": 1.0}},
    )
    fed.drop["bank_02"] = _is(MaskedInput)
    fed.pump(fed.orchestrator.start(fed.now))
    rec = fed.orchestrator.history[1]
    assert rec.status == "completed" and sorted(rec.survivors) == ["bank_00", "bank_01"]
    assert len(rec.selected) == 3
    (_, before), (_, after) = fed.models
    total = np.zeros(len(before), dtype=np.float64)
    for bank in rec.survivors:
        recorded = fed.plain_updates(bank, rec.round)
        assert recorded is not None and recorded[1] == 1.0
        total += recorded[0]
    expected = (before.astype(np.float64) + total / 3).astype(np.float32)
    levels = ((1 << 31) - 1) // 3
    step = fed.agg_config.secagg.clip_range / levels
    np.testing.assert_allclose(after, expected, rtol=0, atol=max(1e-6, 1e4 * 3 * step))
    assert not np.allclose(after, before + total / 2, rtol=0, atol=1e-4)


def test_sum_longer_than_clipped_updates_allow_is_refused(
    federation_factory: Callable[..., Federation], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under bank-level DP every honest update is clipped to C: bank_00 sends a vector near the
    secure sum's per-coordinate range instead (within it, so quantisation does not clip it).
    The unmasked sum is longer than three clipped, noised updates can be; the round is refused
    as ``invalid_sum`` and the next one runs."""
    import fraudfl.rounds.tasks as tasks_module

    original = tasks_module.privatize_update
    attacks = []

    def malicious_once(update: np.ndarray, cfg: Any, rng: np.random.Generator) -> np.ndarray:
        if not attacks:
            attacks.append(len(update))
            return np.full(len(update), 3.9, dtype=np.float32)
        return original(update, cfg, rng)

    monkeypatch.setattr(tasks_module, "privatize_update", malicious_once)
    fed = federation_factory(
        rounds=1, agg_overrides={"bank_dp": {"enabled": True, "clip_norm": 0.5,
                                             "noise_multiplier": 1.0}},
    )
    fed.pump(fed.orchestrator.start(fed.now))
    history = fed.orchestrator.history
    assert attacks and [r.status for r in history] == ["completed", "aborted", "completed"]
    assert history[1].cause == "invalid_sum" and "norm" in history[1].reason


def test_unresumable_round_keeps_round_numbers_consecutive_for_banks(
    federation_factory: Callable[..., Federation],
) -> None:
    """Banks accept only the next round number. An aggregator that cannot resume round r (its
    announcement never went out) publishes it anyway, then a signed Abort of it, then round
    r + 1: a bank reading them as one batch skips r without training and joins r + 1."""
    fed = federation_factory(rounds=2)
    queue = fed.orchestrator.start(fed.now)
    while fed.orchestrator.completed < 1 or fed.orchestrator.server is None:
        replies = fed.deliver(queue)
        queue = [o for b, r in replies for o in fed.orchestrator.receive(
            b, r.round, r.payload_type, r.payload, fed.now)]
    header, blobs = fed.orchestrator.to_state()
    broken = header["round"]
    header["server"]["version"] = 99
    fed.orchestrator = fed.new_orchestrator()
    fed.orchestrator.load_state(header, blobs)
    out = fed.orchestrator.restart(fed.now)
    assert [(o.round, o.payload_type) for o in out if o.topic == "control"] == [
        (broken, ANNOUNCE), (broken, SECAGG), (broken + 1, ANNOUNCE)
    ]
    bank = fed.banks["bank_00"]
    replies = _catch_up(bank, [out])
    assert {r.round for r in replies} == {broken + 1}
    assert [r.stage for r in replies] == ["advertise_keys"]
    assert bank.last_announced == broken + 1
