"""Personalisation: personal models beat the global one on a deliberately heterogeneous split,
FedPer never carries head parameters, DP personal training is charged to the bank's accountant,
and the bank-node entry points."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudfl.data import load_dataset
from fraudfl.errors import FraudflError
from fraudfl.models import ModelSpec, get_flat_params
from fraudfl.personalization import (
    FedPerBank,
    ParamPartition,
    PersonalizationConfig,
    personalize_for_bank,
    private_trainer,
)
from fraudfl.personalization.simulation import personalize_banks, run_fedper, run_personalized
from fraudfl.simulation import SimulationConfig, prepare_data, run_simulation
from fraudfl.strategy import Contribution, PlainAggregator, SummedUpdate
from fraudfl.training import TrainConfig

# Concept shift: each bank's fraud is a different direction in feature space, so no single
# model ranks all banks' frauds well but each bank's own data teaches its pattern.
DIRECTIONS = {
    "bank_a": np.array([2.0, 0.0, 0.0, 0.0]),
    "bank_b": np.array([-2.0, 1.5, 0.0, 0.0]),
    "bank_c": np.array([0.0, -1.5, 2.0, 0.0]),
}


def write_heterogeneous(root: Path, rows: int = 1500, seed: int = 7) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for bank, direction in DIRECTIONS.items():
        X = rng.normal(size=(rows, 4))
        logits = X @ direction - 3.0
        y = (rng.random(rows) < 1 / (1 + np.exp(-logits))).astype(int)
        frame = pd.DataFrame(X, columns=["f0", "f1", "f2", "f3"])
        frame["channel"] = rng.choice(["web", "pos"], size=rows)
        frame["is_fraud"] = y
        frame.to_csv(root / f"{bank}.csv", index=False)
    (root / "schema.toml").write_text(
        'label = "is_fraud"\nnumeric = ["f0", "f1", "f2", "f3"]\ncategorical = ["channel"]\n'
    )
    return root


CONFIG = SimulationConfig(strategy="fedavg", rounds=4, banks_per_round=3, local_epochs=1,
                          batch_size=32, lr=0.05, hidden=(16, 8), seed=0, val_fraction=0.3)


@pytest.fixture(scope="module")
def heterogeneous(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_heterogeneous(tmp_path_factory.mktemp("hetero") / "data")


@pytest.mark.parametrize(
    ("pcfg", "margin"),
    [
        # Measured on this seed: +0.32, +0.31 and +0.07 AUPRC on average over the banks.
        (PersonalizationConfig(method="finetune", epochs=3), 0.2),
        (PersonalizationConfig(method="ditto", epochs=3, lam=0.05), 0.2),
        (PersonalizationConfig(method="fedper"), 0.03),
    ],
    ids=["finetune", "ditto", "fedper"],
)
def test_personal_models_beat_the_global_one(
    heterogeneous: Path, pcfg: PersonalizationConfig, margin: float
) -> None:
    dataset = load_dataset(heterogeneous)
    result, report = run_personalized(dataset, CONFIG, pcfg, progress=False)
    assert result.final["personalization"]["method"] == pcfg.method
    global_auprc = report.mean("global")
    personal_auprc = report.mean("personal")
    assert personal_auprc > global_auprc + margin, report.to_dict()
    better = sum(b.personal_metrics["auprc"] > b.global_metrics["auprc"] for b in report.banks)
    assert better == len(DIRECTIONS), report.to_dict()


class RecordingAggregator:
    """The aggregation boundary (plain sum here, secure aggregation in production): records
    every vector that crosses it."""

    def __init__(self) -> None:
        self.carried: list[np.ndarray] = []
        self.dims: list[int] = []
        self.inner = PlainAggregator()

    def sum(
        self, server_round: int, contributions: Sequence[Contribution], dim: int
    ) -> SummedUpdate:
        self.dims.append(dim)
        self.carried += [c.update.copy() for c in contributions]
        return self.inner.sum(server_round, contributions, dim)


def test_fedper_never_sends_head_parameters(heterogeneous: Path) -> None:
    dataset = load_dataset(heterogeneous)
    recorder = RecordingAggregator()
    pcfg = PersonalizationConfig(method="fedper")
    result, banks, partition = run_fedper(dataset, CONFIG, pcfg, aggregator=recorder,
                                          progress=False)
    model = ModelSpec("mlp", 5 + 1, 2, hidden=(16, 8)).build()
    assert partition == ParamPartition.for_model(model)
    head_size = partition.size - partition.shared_size
    assert head_size == 8 + 1  # the last Linear(8 -> 1): weights and bias
    assert recorder.dims == [partition.shared_size] * CONFIG.rounds
    assert len(recorder.carried) == CONFIG.rounds * len(DIRECTIONS)
    assert all(v.shape == (partition.shared_size,) for v in recorder.carried)
    carried = np.concatenate(recorder.carried)
    for state in banks.values():
        assert state.head is not None
        # Neither the heads nor their changes from the initial head ever cross the boundary.
        initial_head = partition.personal(result.final_params)
        assert not np.isin(state.head, carried).any()
        assert not np.isin(state.head - initial_head, carried).any()
    # The global head never moved: only bodies were aggregated.
    fresh = get_flat_params(ModelSpec("mlp", 6, 2, hidden=(16, 8)).build(seed=CONFIG.seed))
    np.testing.assert_array_equal(partition.personal(result.final_params),
                                  partition.personal(fresh))


def test_fedper_state_for_the_bank_node() -> None:
    model = ModelSpec("mlp", 6, 2, hidden=(16, 8)).build()
    partition = ParamPartition.for_model(model)
    two_layers = ParamPartition.for_model(model, personal_layers=2)
    assert two_layers.shared_size < partition.shared_size
    with pytest.raises(FraudflError, match="use the mlp model"):
        ParamPartition.for_model(ModelSpec("logistic", 6, 2).build())
    bank = FedPerBank(partition)
    global_params = get_flat_params(model)
    assert np.array_equal(bank.start_params(global_params), global_params)
    local = global_params + 1.0
    update = bank.finish_round(local, global_params)
    assert update.shape == (partition.shared_size,)
    np.testing.assert_allclose(update, 1.0)
    restored = FedPerBank.from_dict(bank.to_dict())
    assert restored.head is not None
    np.testing.assert_allclose(restored.personal_params(global_params),
                               partition.merge(partition.shared(global_params),
                                               partition.personal(local)))


def test_dp_personal_training_is_charged_to_the_banks_accountant(heterogeneous: Path) -> None:
    from fraudfl.privacy.accountant import PrivacyAccountant, PrivacyBudget
    from fraudfl.training.private import DPConfig, dp_planned_steps

    dataset = load_dataset(heterogeneous)
    config = SimulationConfig(strategy="fedavg", rounds=1, banks_per_round=3, hidden=(16, 8),
                              batch_size=128, seed=0, val_fraction=0.3)
    data = prepare_data(dataset, config.val_fraction, config.seed)
    accountants = {b.bank_id: PrivacyAccountant(budget=PrivacyBudget(50.0, 1e-5),
                                                label=b.bank_id) for b in data.banks}
    trainer = private_trainer(accountants, DPConfig(noise_multiplier=1.0))
    result = run_simulation(dataset, config, trainer=trainer, progress=False)
    steps_after_rounds = {k: a.total_steps for k, a in accountants.items()}
    assert all(s > 0 for s in steps_after_rounds.values())
    pcfg = PersonalizationConfig(method="finetune", epochs=1)
    personalize_banks(data, config, pcfg, result.final_params, trainer=trainer)
    for bank in data.banks:
        planned = dp_planned_steps(pcfg.train_config(config.train_config("binary", mu=0.0)),
                                   len(bank.y_train))
        assert accountants[bank.bank_id].total_steps == steps_after_rounds[bank.bank_id] + planned
    with pytest.raises(FraudflError, match="no privacy accountant"):
        personalize_banks(data, config, pcfg, result.final_params,
                          trainer=private_trainer({}, DPConfig(noise_multiplier=1.0)))


def test_personalize_for_bank_reports_global_vs_personal(heterogeneous: Path) -> None:
    dataset = load_dataset(heterogeneous)
    data = prepare_data(dataset, 0.3, 0)
    bank = data.banks[1]
    model = ModelSpec("mlp", data.num_features, 2, hidden=(16, 8)).build()
    global_params = get_flat_params(model)
    out = personalize_for_bank(
        PersonalizationConfig(method="ditto", epochs=2, lam=0.1), bank_id=bank.bank_id,
        model=model, global_params=global_params, X_train=bank.X_train, y_train=bank.y_train,
        X_val=bank.X_val, y_val=bank.y_val, base_cfg=TrainConfig(lr=0.05),
        rng=np.random.default_rng(0),
    )
    assert out.params.shape == global_params.shape
    assert not np.array_equal(out.params, global_params)
    assert out.comparison.bank_id == bank.bank_id
    assert out.comparison.num_val == len(bank.y_val)
    assert set(out.comparison.global_metrics) >= {"auprc", "roc_auc", "loss"}
    # Trained from a random start on the bank's own data: clearly better than random.
    assert out.comparison.personal_metrics["auprc"] > out.comparison.global_metrics["auprc"]


def test_config_validation() -> None:
    with pytest.raises(FraudflError, match="personalization must be one of"):
        PersonalizationConfig(method="magic")  # type: ignore[arg-type]
    with pytest.raises(FraudflError, match="lambda"):
        PersonalizationConfig(method="ditto", lam=-1)
    for bad_lr in (0.0, float("nan"), float("inf")):
        with pytest.raises(FraudflError, match="lr must be a finite number > 0"):
            PersonalizationConfig(method="finetune", lr=bad_lr)
    with pytest.raises(FraudflError, match="lambda must be a finite number"):
        PersonalizationConfig(method="ditto", lam=float("inf"))
    base = TrainConfig(lr=0.1, mu=0.5, local_epochs=1, max_steps=4)
    ditto = PersonalizationConfig(method="ditto", epochs=5, lam=0.3).train_config(base)
    assert (ditto.mu, ditto.local_epochs, ditto.max_steps, ditto.lr) == (0.3, 5, None, 0.1)
    assert PersonalizationConfig(method="finetune", lr=0.01).train_config(base).mu == 0.0


def test_simulate_cli_reports_personalization(
    heterogeneous: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from fraudfl.cli import main

    out = tmp_path / "results.json"
    code = main(["simulate", "--data", str(heterogeneous), "--rounds", "2", "--hidden", "16,8",
                 "--personalization", "finetune", "--personal-epochs", "1", "--no-progress",
                 "--out", str(out)])
    assert code == 0
    assert "personalisation (finetune)" in capsys.readouterr().out
    pers = json.loads(out.read_text())["final"]["personalization"]
    assert pers["method"] == "finetune"
    assert [b["bank_id"] for b in pers["banks"]] == sorted(DIRECTIONS)
    assert all({"auprc", "roc_auc"} <= set(b["personal"]) for b in pers["banks"])


def test_fedper_through_secure_aggregation_masks_only_the_body(
    heterogeneous: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from fraudfl.secagg.aggregator import SecureAggregator
    from fraudfl.secagg.client import SecAggClient

    masked_inputs: list[np.ndarray] = []
    original = SecAggClient.set_input

    def record(self: SecAggClient, update: np.ndarray, weight: float | None = None) -> None:
        masked_inputs.append(np.array(update, copy=True))
        original(self, update, weight)

    monkeypatch.setattr(SecAggClient, "set_input", record)
    config = replace(CONFIG, rounds=2)
    result, banks, partition = run_fedper(load_dataset(heterogeneous), config,
                                          PersonalizationConfig(method="fedper"),
                                          aggregator=SecureAggregator(), progress=False)
    # What each bank hands to the SecAgg client (then masks and sends) is its body update only.
    assert len(masked_inputs) == 2 * len(DIRECTIONS)
    assert all(v.shape == (partition.shared_size,) for v in masked_inputs)
    carried = np.concatenate(masked_inputs)
    for state in banks.values():
        assert state.head is not None
        assert not np.isin(state.head, carried).any()
    assert np.isfinite(result.final["auprc"])


def _dp_config(**privacy: object) -> SimulationConfig:
    from dataclasses import replace

    from fraudfl.privacy.options import PrivacyOptions

    return replace(CONFIG, rounds=2, batch_size=128,
                   privacy=PrivacyOptions(**privacy))  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["finetune", "ditto"])
def test_dp_options_make_personal_training_private_and_fit_the_target(
    heterogeneous: Path, method: str, tmp_path: Path
) -> None:
    """`fraudfl simulate --personalization ... --target-epsilon`: the personal epochs are DP-SGD
    charged to the same accountants as the rounds (and saved with them), and the calibrated
    noise leaves room for them within the target."""
    from fraudfl.privacy.accountant import PrivacyAccountant
    from fraudfl.privacy.federation import state_path
    from fraudfl.training.private import dp_planned_steps

    dataset = load_dataset(heterogeneous)
    config = _dp_config(target_epsilon=3.0, state_dir=str(tmp_path))
    pcfg = PersonalizationConfig(method=method, epochs=2)  # type: ignore[arg-type]
    result, report = run_personalized(dataset, config, pcfg, progress=False)
    assert report.declined == []
    after_rounds = result.rounds[-1].privacy["epsilon"]
    after_personal = result.final["personalization"]["epsilon"]
    data = prepare_data(dataset, config.val_fraction, config.seed)
    for bank in data.banks:
        round_cfg = config.train_config("binary", mu=0.0)
        planned = (config.rounds * dp_planned_steps(round_cfg, len(bank.y_train))
                   + dp_planned_steps(pcfg.train_config(round_cfg), len(bank.y_train)))
        saved = PrivacyAccountant.load(state_path(tmp_path, bank.bank_id))
        assert saved.total_steps == planned  # every round and personal step was charged
        assert saved.epsilon() == pytest.approx(after_personal[bank.bank_id])
        assert after_rounds[bank.bank_id] < after_personal[bank.bank_id] <= 3.0


def test_dp_options_with_fedper_keep_the_heads_and_charge_the_accountants(
    heterogeneous: Path,
) -> None:
    dataset = load_dataset(heterogeneous)
    config = _dp_config(noise_multiplier=1.0, target_epsilon=100.0)
    result, report = run_personalized(dataset, config, PersonalizationConfig(method="fedper"),
                                      progress=False)
    assert len(report.banks) == 3
    assert all(e > 0 for e in result.rounds[-1].privacy["epsilon"].values())


def test_personal_training_over_budget_keeps_the_global_model(heterogeneous: Path) -> None:
    dataset = load_dataset(heterogeneous)
    # The rounds fit in the budget, the personal epochs after them do not.
    config = _dp_config(noise_multiplier=1.0, target_epsilon=6.0)
    pcfg = PersonalizationConfig(method="finetune", epochs=20)
    result, report = run_personalized(dataset, config, pcfg, progress=False)
    assert not any(r.declined for r in result.rounds)
    assert report.declined == [b.bank_id for b in report.banks]
    for b in report.banks:
        assert b.personal_metrics == b.global_metrics


def test_fedper_with_banks_that_never_took_part(heterogeneous: Path) -> None:
    """One bank per round for one round: the two banks never sampled have no head of their
    own and are evaluated with FedPer's global model instead of failing the run."""
    from dataclasses import replace

    from fraudfl.models import set_flat_params
    from fraudfl.training.evaluation import evaluate

    dataset = load_dataset(heterogeneous)
    config = replace(CONFIG, rounds=1, banks_per_round=1)
    result, report = run_personalized(dataset, config, PersonalizationConfig(method="fedper"),
                                      progress=False)
    assert [b.bank_id for b in report.banks] == list(DIRECTIONS)
    sampled = set(result.rounds[0].participants)
    assert len(sampled) == 1
    data = prepare_data(dataset, config.val_fraction, config.seed)
    model = ModelSpec("mlp", data.num_features, 2, hidden=CONFIG.hidden).build()
    for bank, comparison in zip(data.banks, report.banks, strict=True):
        if bank.bank_id in sampled:
            continue
        set_flat_params(model, result.final_params)
        assert comparison.personal_metrics == evaluate(model, bank.X_val, bank.y_val, "binary")
