import json
import math
from pathlib import Path

import numpy as np
import pytest

from fraudfl.data import load_dataset
from fraudfl.errors import FraudflError
from fraudfl.models import ModelSpec, get_flat_params
from fraudfl.simulation import (
    RoundRecord,
    Simulation,
    SimulationConfig,
    SimulationResult,
    plan_stragglers,
    run_simulation,
    smallest_bank_comparison,
)
from tests.simulation.conftest import write_small_dataset

BINARY = {"auprc", "roc_auc", "recall_at_1pct_fpr", "loss"}


def _cfg(**kw: object) -> SimulationConfig:
    base: dict[str, object] = dict(rounds=2, banks_per_round=4, local_epochs=2, batch_size=32,
                                   lr=0.1, model="logistic", seed=1)
    base.update(kw)
    return SimulationConfig(**base)  # type: ignore[arg-type]


def _run_recording(ds: object, cfg: SimulationConfig
                   ) -> tuple[Simulation, dict[int, dict[str, tuple[np.ndarray, float]]]]:
    """Run the engine, recording every bank's contribution (before it is summed)."""
    sim = Simulation(ds, cfg)  # type: ignore[arg-type]
    inputs: dict[int, dict[str, tuple[np.ndarray, float]]] = {}
    for bank_id, participant in sim.participants.items():
        def record(rnd: int, update: np.ndarray, weight: float, bank: str = bank_id) -> None:
            inputs.setdefault(rnd, {})[bank] = (update.copy(), weight)
        participant.on_input = record
    sim.run()
    return sim, inputs


def test_results_shape_and_baselines(small_dataset: Path) -> None:
    ds = load_dataset(small_dataset, label_column="Class", drop_columns=["tx_id"])
    res = run_simulation(ds, _cfg(strategy="fedprox", mu=0.1, rounds=3, baseline="all"))
    out = json.loads(json.dumps(res.to_json(), allow_nan=False))
    assert set(out) == {"config", "rounds", "final"}
    assert out["config"]["strategy"] == "fedprox" and out["config"]["eval_set"] == "test"
    assert [r["round"] for r in out["rounds"]] == [1, 2, 3]
    for r in out["rounds"]:
        assert set(r) == {"round", "global", "banks"}
        assert set(r["global"]) == BINARY | {"train_loss"}
        assert set(r["banks"]) == {"bank_0", "bank_1", "bank_2", "bank_3"}
        assert all(set(m) == BINARY for m in r["banks"].values())
    final = out["final"]
    assert {k: final[k] for k in BINARY} == {k: out["rounds"][-1]["global"][k] for k in BINARY}
    local = final["baselines"]["local"]
    assert local["smallest_bank"] == "bank_3"
    assert set(local["banks"]["bank_3"]) == {"num_train", "val", "global"}
    assert set(final["baselines"]["centralized"]) == {"global", "banks"}
    cmp = smallest_bank_comparison(res)
    assert cmp is not None and cmp["bank"] == "bank_3" and cmp["metric"] == "auprc"
    # the shared signal is easy: federation must beat chance by far
    assert final["roc_auc"] > 0.8


def test_deterministic_under_seed(small_dataset: Path) -> None:
    ds = load_dataset(small_dataset, label_column="Class", drop_columns=["tx_id"])
    cfg = _cfg(strategy="fedprox", mu=0.1, straggler_fraction=0.5, banks_per_round=3)
    a = run_simulation(ds, cfg)
    b = run_simulation(ds, cfg)
    c = run_simulation(ds, _cfg(strategy="fedprox", mu=0.1, straggler_fraction=0.5,
                                banks_per_round=3, seed=2))
    np.testing.assert_array_equal(a.final_params, b.final_params)
    assert a.to_json() == b.to_json()
    assert not np.array_equal(a.final_params, c.final_params)


def test_fedavg_drops_stragglers_fedprox_keeps_partial_work(small_dataset: Path) -> None:
    ds = load_dataset(small_dataset, label_column="Class", drop_columns=["tx_id"])
    runs = {}
    for name in ("fedavg", "fedprox"):
        runs[name] = _run_recording(ds, _cfg(strategy=name, local_epochs=4,
                                             straggler_fraction=0.5))
    (avg, avg_in), (prox, prox_in) = runs["fedavg"], runs["fedprox"]
    for r_avg, r_prox in zip(avg.records, prox.records, strict=True):
        # the same banks straggle under both strategies
        assert r_avg.stragglers == r_prox.stragglers and len(r_avg.stragglers) == 2
        assert set(r_avg.dropped) == set(r_avg.stragglers) and r_prox.dropped == []
        # FedAvg sums the two banks that finished in time (a plain sum needs no majority);
        # FedProx all four, the stragglers' partial work included
        avg_sum = {r.round: r.survivors for r in avg.orchestrator.history}[r_avg.round]
        prox_sum = {r.round: r.survivors for r in prox.orchestrator.history}[r_prox.round]
        assert set(avg_sum).isdisjoint(r_avg.stragglers) and len(avg_sum) == 2
        assert len(prox_sum) == 4 and set(prox_in[r_prox.round]) == set(prox_sum)
        assert set(avg_in[r_avg.round]) >= set(avg_sum)


def test_secure_sums_keep_the_majority_threshold(small_dataset: Path) -> None:
    """With secure aggregation a round needs t > half of the banks, as in the services: FedAvg
    losing two stragglers of four aborts the round instead of unmasking a sum of two."""
    ds = load_dataset(small_dataset, label_column="Class", drop_columns=["tx_id"])
    sim, _ = _run_recording(ds, _cfg(strategy="fedavg", local_epochs=4, straggler_fraction=0.5,
                                     secure_aggregation=True, rounds=1))
    training = [r for r in sim.orchestrator.history if r.kind == "train"]
    assert training and all(r.status == "aborted" and r.cause == "below_threshold"
                            for r in training)
    assert sim.records == []


def test_strategy_applied_to_the_aggregated_sum(small_dataset: Path) -> None:
    ds = load_dataset(small_dataset, label_column="Class", drop_columns=["tx_id"])
    sim, inputs = _run_recording(ds, _cfg(strategy="fedavg", rounds=1))
    contributions = inputs[1]
    weights = np.array([w for _, w in contributions.values()])
    mean = sum(w * u for u, w in contributions.values()) / weights.sum()
    initial = ModelSpec.from_dict(sim.spec.to_dict()).build(seed=1)  # type: ignore[union-attr]
    # within the quantisation of the summed vector (the same with or without masking)
    assert sim.params is not None
    np.testing.assert_allclose(sim.params, get_flat_params(initial) + mean, atol=1e-5)


def test_plain_and_secure_sums_give_the_same_model(small_dataset: Path) -> None:
    ds = load_dataset(small_dataset, label_column="Class", drop_columns=["tx_id"])
    plain = run_simulation(ds, _cfg(strategy="fedprox", mu=0.1))
    secure = run_simulation(ds, _cfg(strategy="fedprox", mu=0.1, secure_aggregation=True))
    np.testing.assert_array_equal(plain.final_params, secure.final_params)


def test_weights_follow_the_consortium_policy(small_dataset: Path) -> None:
    ds = load_dataset(small_dataset, label_column="Class", drop_columns=["tx_id"])
    sim, inputs = _run_recording(ds, _cfg(rounds=1, local_epochs=1, update_weight="examples"))
    sizes = {s.bank_id: len(s.train) for s in sim.splits}
    for bank, (_, weight) in inputs[1].items():
        assert weight == pytest.approx(sizes[bank] / max(sizes.values()))
    # the services' default: every bank weighs 1, its example count never leaves it
    _, inputs = _run_recording(ds, _cfg(rounds=1, local_epochs=1))
    assert {w for _, w in inputs[1].values()} == {1.0}


def test_stragglers_are_seeded_and_follow_the_paper() -> None:
    cfg = _cfg(banks_per_round=10, local_epochs=20, straggler_fraction=0.9)
    selected = [f"bank_{i:02d}" for i in range(10)]
    plan = plan_stragglers(3, selected, cfg)
    assert len(plan) == 9 and set(plan) <= set(selected)
    for wf in plan.values():
        assert 1 <= wf * 20 < 20 and math.isclose(wf * 20, round(wf * 20))
    assert plan_stragglers(3, selected, cfg) == plan
    assert plan_stragglers(4, selected, cfg) != plan
    assert len(plan_stragglers(1, selected, _cfg(straggler_fraction=0.5))) == 5


def test_without_test_file_uses_banks_validation_sets(tmp_path: Path) -> None:
    root = write_small_dataset(tmp_path / "d", sizes=(200, 100), test_rows=0, multiclass=True)
    ds = load_dataset(root, label_column="Class", drop_columns=["tx_id"])
    assert ds.schema.task == "multiclass"
    res = run_simulation(ds, _cfg(strategy="fedyogi", rounds=2, baseline="local"))
    assert res.config["eval_set"] == "banks_val"
    assert set(res.final) == {"accuracy", "loss", "train_loss", "baselines"}
    cmp = smallest_bank_comparison(res)
    assert cmp is not None and cmp["metric"] == "accuracy"


@pytest.mark.parametrize("strategy", ["fedavgm", "fedadam"])
def test_server_optimisers_run(small_dataset: Path, strategy: str) -> None:
    ds = load_dataset(small_dataset, label_column="Class", drop_columns=["tx_id"])
    res = run_simulation(ds, _cfg(strategy=strategy, model="mlp", hidden=(8,)))
    assert np.isfinite(res.final_params).all() and res.final["loss"] < 1.0


def test_config_validation() -> None:
    with pytest.raises(FraudflError, match="strategy"):
        SimulationConfig(strategy="fedsgd")
    with pytest.raises(FraudflError, match="straggler_fraction"):
        SimulationConfig(straggler_fraction=1.5)
    with pytest.raises(FraudflError, match="batch_size"):
        SimulationConfig(batch_size=0)


def test_nan_metrics_are_written_as_null() -> None:
    record = RoundRecord(round=1, global_metrics={"auprc": math.nan, "loss": 0.5},
                         banks={"a": {"auprc": float("nan")}}, seconds=0.1,
                         participants=["a"], stragglers=[], dropped=[])
    result = SimulationResult(config={"seed": np.int64(3)}, task="binary", rounds=[record],
                              final={"auprc": math.nan}, startup_seconds=0.0,
                              final_params=np.zeros(1, np.float32))
    text = json.dumps(result.to_json(), allow_nan=False)
    assert json.loads(text) == {
        "config": {"seed": 3},
        "rounds": [{"round": 1, "global": {"auprc": None, "loss": 0.5},
                    "banks": {"a": {"auprc": None}}}],
        "final": {"auprc": None},
    }
