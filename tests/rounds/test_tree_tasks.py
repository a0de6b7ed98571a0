"""Gradient-boosted trees through the round engine (InMemoryGrid): every step a secure sum."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fraudfl.config import BankSettings
from fraudfl.data.pipeline import FeaturePipeline
from fraudfl.rounds.messages import ANNOUNCE, MODEL, Announcement, decode, decode_tree_model
from fraudfl.rounds.orchestrator import Outbound
from fraudfl.rounds.participant import Reply
from fraudfl.rounds.policy import ConsortiumPolicy, TaskPolicy, TreeBounds
from fraudfl.trees import (
    BankData,
    GBDTParams,
    TreeEnsemble,
    edges_from_histograms,
    feature_histograms,
    plain_sum,
    quantized_sum,
    train_federated,
)
from tests.rounds.federation import Federation

TREES = {"n_estimators": 3, "max_depth": 3, "learning_rate": 0.3, "max_bin": 32,
         "min_child_weight": 0.5, "min_child_samples": 5, "clip": 4096.0}


def make(factory: Callable[..., Federation], secure: bool = False, **kw: Any) -> Federation:
    """A gbdt federation; without secure aggregation its banks allow plain sums, as the
    simulator's banks do (a bank node's configuration refuses them)."""
    trees = kw.pop("trees", {})
    fed = factory(agg_overrides=gbdt_overrides(secure, **trees), **kw)
    if not secure:
        for bank in fed.banks.values():
            settings = bank.config.model_dump(include=set(BankSettings.model_fields))
            bank.config = BankSettings.model_validate({**settings, "allow_plain_sum": True})
    return fed


def gbdt_overrides(secure: bool, **trees: Any) -> dict[str, Any]:
    return {"training": {"model": "gbdt"}, "secagg": {"enabled": secure},
            "trees": {**TREES, **trees}}


def published(fed: Federation) -> list[tuple[Any, TreeEnsemble | None]]:
    return [decode_tree_model(o.payload) for o in fed.transcript if o.payload_type == MODEL]


def reference(fed: Federation, **kw: Any) -> TreeEnsemble:
    """``train_federated`` on the banks' rows, binned as the federation binned them."""
    info, _ = published(fed)[-1]
    pipeline = FeaturePipeline.from_dict(info.pipeline)
    data = [pipeline.transform(b.frame) for b in fed.banks.values()]
    params = GBDTParams.parse(info.spec)
    counts = sum(feature_histograms(X) for X, _ in data)
    edges = edges_from_histograms(counts, pipeline.num_features, params.max_bin)
    banks = [BankData(edges.transform(X), y.astype(np.int64)) for X, y in data]
    return train_federated(banks, params, edges, **kw).ensemble


def run(fed: Federation) -> TreeEnsemble:
    fed.grid.run()
    orch = fed.orchestrator
    assert orch.finished and orch.trees is not None
    ensemble = published(fed)[-1][1]
    assert ensemble is not None
    return ensemble


def assert_same(a: TreeEnsemble, b: TreeEnsemble) -> None:
    np.testing.assert_array_equal(a.feature, b.feature)
    np.testing.assert_array_equal(a.split_bin, b.split_bin)
    np.testing.assert_array_equal(a.default_left, b.default_left)
    np.testing.assert_array_equal(a.value, b.value)
    np.testing.assert_array_equal(a.base_margin, b.base_margin)


def test_plain_engine_equals_train_federated(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = make(federation_factory)
    ensemble = run(fed)
    kinds = [r.kind for r in fed.orchestrator.history]
    # stats, the bins sketch, label counts, then (levels + leaves) per tree at most.
    assert kinds[:3] == ["stats", "tree_bins", "tree"]
    assert all(r.status == "completed" for r in fed.orchestrator.history)
    assert ensemble.n_rounds == TREES["n_estimators"]
    assert (ensemble.feature >= 0).any()
    # The plain sum is the secure sum's quantised ring arithmetic in the clear.
    expected = reference(fed, sum_vectors=quantized_sum(TREES["clip"], 32))
    assert_same(ensemble, expected)
    # Only the tree steps that changed the ensemble published a model: v0, the base margin,
    # and one per boosting round.
    versions = [info.version for info, _ in published(fed)]
    assert len(versions) == 2 + TREES["n_estimators"]
    assert versions == sorted(versions)


def test_secure_engine_within_quantisation_bound(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = make(federation_factory, secure=True)
    ensemble = run(fed)
    # Masks cancel exactly: the same ring sum as the plain engine's ...
    expected = reference(fed, sum_vectors=quantized_sum(TREES["clip"], 32))
    assert_same(ensemble, expected)
    # ... which is within the quantisation bound of the exact float sums (the propagated
    # bound is derived and checked in tests/trees/test_secure_sum.py): same splits.
    exact = reference(fed, sum_vectors=plain_sum)
    np.testing.assert_array_equal(ensemble.feature, exact.feature)
    np.testing.assert_array_equal(ensemble.split_bin, exact.split_bin)
    assert 0 < np.abs(ensemble.value - exact.value).max() < 1e-4


def test_aggregator_restart_mid_tree_resumes(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = make(federation_factory)
    orch = fed.orchestrator
    out = orch.start(fed.now)
    # Deliver until the second tree's depth-1 level is announced, then restart from a copy.
    for _ in range(10_000):
        tree = orch.trees
        if (tree is not None and tree.builder is not None and tree.round_sums
                and tree.builder.ensemble.n_rounds == 1):
            break
        replies = fed.deliver(out)
        out = []
        for bank_id, reply in replies:
            fed.now += 0.001
            out += orch.receive(bank_id, reply.round, reply.payload_type, reply.payload, fed.now)
    header, blobs = orch.to_state()
    restarted = fed.new_orchestrator()
    restarted.load_state(header, blobs)
    assert restarted.trees is not None and restarted.trees.round_sums
    fed.orchestrator = restarted
    fed.pump(restarted.restart(fed.now))
    ensemble = published(fed)[-1][1]
    assert ensemble is not None and ensemble.n_rounds == TREES["n_estimators"]
    expected = reference(fed, sum_vectors=quantized_sum(TREES["clip"], 32))
    assert_same(ensemble, expected)


def test_bank_that_lost_its_round_state_rejoins_mid_tree(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = make(federation_factory)
    bank = fed.banks[sorted(fed.banks)[0]]
    lost: list[int] = []
    deliver = fed.grid.deliver

    def forget_mid_tree(out: list[Outbound]) -> list[tuple[str, Reply]]:
        for msg in out:
            if msg.payload_type == ANNOUNCE and not lost:
                ann, _ = decode(msg.payload, Announcement)
                if ann.tree is not None and ann.tree.step == "level" and ann.tree.depth == 2:
                    # A restarted bank: no handler, no row sample, no routed rows.
                    lost.append(ann.tree.boosting_round)
                    bank.tree_job = None
        return deliver(out)
    fed.grid.deliver = forget_mid_tree  # type: ignore[method-assign]
    ensemble = run(fed)
    assert lost
    # The bank re-sampled (all rows: subsample 1) and routed its rows: the same model.
    expected = reference(fed, sum_vectors=quantized_sum(TREES["clip"], 32))
    assert_same(ensemble, expected)


def test_out_of_policy_tree_parameters_are_refused(
    federation_factory: Callable[..., Federation],
) -> None:
    policy = ConsortiumPolicy(tasks=TaskPolicy(trees=TreeBounds(max_depth=(1, 2))))
    fed = make(federation_factory, policy=policy)
    fed.grid.run()
    orch = fed.orchestrator
    bins = [r for r in orch.history if r.kind == "tree_bins"]
    assert bins and all(r.status == "aborted" for r in bins)
    assert all(set(r.declined) == set(fed.banks) for r in bins)
    assert all(b.bins_round == -1 and b.tree_job is None for b in fed.banks.values())
    events = [e for b in fed.banks.values() for e in b.drain_events()]
    assert any(getattr(e, "reason", "") == "out_of_bounds" for e in events)


def test_dp_banks_charge_their_accountant_and_decline_over_budget(
    federation_factory: Callable[..., Federation],
) -> None:
    # DP with a fixed noise multiplier per sum and a budget of epsilon 3; one bank has spent
    # almost all of its budget already.
    fed = make(federation_factory, trees={"label_counts": False, "subsample": 0.5},
               privacy=True, target_epsilon=3.0, noise_multiplier=6.0)
    spent = sorted(fed.banks)[0]
    acc = fed.banks[spent].accountant
    while acc.projected_epsilon(2.0, 0.05, 20) <= 3.0:  # earlier jobs spent almost all of it
        acc.charge(2.0, 0.05, 20)
    assert 2.5 < acc.epsilon() <= 3.0
    ensemble = run(fed)
    assert ensemble.n_rounds == TREES["n_estimators"]
    orch = fed.orchestrator
    assert spent in orch.exhausted
    declined = [r for r in orch.history if spent in r.declined]
    assert declined and declined[0].kind == "tree"
    for bank_id, bank in fed.banks.items():
        if bank_id == spent:
            continue
        # One step per boosting round, of the per-sum multiplier composed over the round's
        # max_depth + 1 sums, within the budget.
        assert bank.accountant.total_steps == TREES["n_estimators"]
        assert {(h.noise_multiplier, h.sample_rate) for h in bank.accountant.history} == {
            (6.0 / 2.0, 0.5)}
        assert 0 < bank.accountant.epsilon() <= 3.0
    # DP changed the model: not the non-private one.
    assert np.abs(ensemble.value).sum() > 0


def test_the_bins_sketch_is_answered_once(
    federation_factory: Callable[..., Federation],
) -> None:
    fed = make(federation_factory, secure=True)
    again = fed.banks[sorted(fed.banks)[0]]
    again.bins_answered = True  # it answered a sketch of this federation before
    ensemble = run(fed)
    bins = next(r for r in fed.orchestrator.history if r.kind == "tree_bins")
    assert bins.status == "completed" and bins.declined == [again.bank_id]
    assert any(getattr(e, "reason", "") == "bins_already_answered" for e in again.drain_events())
    # The others answered it once (their unmask shares are out) and the job went on.
    assert all(b.bins_answered for b in fed.banks.values())
    assert ensemble.n_rounds == TREES["n_estimators"]
