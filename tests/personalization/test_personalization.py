"""Personalisation through the round engine: each bank personalises with its own participant
(the bank node's code), the simulator compares personal and global models per bank."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudfl.data import load_dataset
from fraudfl.errors import FraudflError
from fraudfl.models import ModelSpec, get_flat_params
from fraudfl.personalization import FedPerBank, ParamPartition, PersonalizationConfig
from fraudfl.privacy.options import PrivacyOptions
from fraudfl.simulation import Simulation, SimulationConfig, run_simulation
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


def _personalized(dataset: object, method: str, **kw: object) -> dict[str, object]:
    config = replace(CONFIG, personalization=method, **kw)  # type: ignore[arg-type]
    result = run_simulation(dataset, config)  # type: ignore[arg-type]
    report: dict[str, object] = result.final["personalization"]
    return report


@pytest.fixture(scope="module")
def heterogeneous(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_heterogeneous(tmp_path_factory.mktemp("hetero") / "data")


@pytest.mark.parametrize(
    ("method", "margin"),
    [("finetune", 0.2), ("ditto", 0.2), ("fedper", 0.03)],
)
def test_personal_models_beat_the_global_one(
    heterogeneous: Path, method: str, margin: float
) -> None:
    report = _personalized(load_dataset(heterogeneous), method, personal_epochs=3)
    assert report["method"] == method
    assert report["mean_personal_auprc"] > report["mean_global_auprc"] + margin, report
    banks = report["banks"]
    assert isinstance(banks, list)
    better = sum(b["personal"]["auprc"] > b["global"]["auprc"] for b in banks)
    assert better == len(DIRECTIONS), report


def test_fedper_never_sends_head_parameters(heterogeneous: Path) -> None:
    dataset = load_dataset(heterogeneous)
    sim = Simulation(dataset, replace(CONFIG, personalization="fedper",
                                      secure_aggregation=True))
    sent: list[np.ndarray] = []
    for participant in sim.participants.values():
        participant.on_input = lambda rnd, update, weight: sent.append(update.copy())
    sim.run()
    assert sim.spec is not None
    partition = ParamPartition.for_model(sim.spec.build(), 1)
    assert sent and all(len(u) == partition.shared_size < partition.size for u in sent)
    # each bank kept a head of its own, trained on its data
    heads = [p.fedper.head for p in sim.participants.values() if p.fedper is not None]
    assert len(heads) == len(DIRECTIONS) and all(h is not None for h in heads)


def test_dp_personal_training_is_charged_and_fits_the_target(heterogeneous: Path) -> None:
    dataset = load_dataset(heterogeneous)
    config = replace(CONFIG, rounds=2, batch_size=128, personalization="finetune",
                     personal_epochs=1, privacy=PrivacyOptions(target_epsilon=3.0))
    result = run_simulation(dataset, config)
    after_rounds = result.rounds[-1].privacy["epsilon"]
    after_personal = result.final["personalization"]["epsilon"]
    for bank, eps in after_personal.items():
        # personal training spent more, and the calibration planned for it
        assert after_rounds[bank] < eps <= 3.0 + 1e-9


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
