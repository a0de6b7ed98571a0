"""DP inside ``run_simulation``: per-bank epsilon, federation epsilon, declines, restarts."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudfl.data import load_dataset
from fraudfl.data.loading import FederatedDataset
from fraudfl.errors import FraudflError
from fraudfl.privacy.accountant import PrivacyAccountant
from fraudfl.privacy.options import PrivacyOptions
from fraudfl.simulation import SimulationConfig, privacy_state_path, run_simulation

BANKS = ("bank_0", "bank_1", "bank_2")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> FederatedDataset:
    root = tmp_path_factory.mktemp("dp") / "data"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i, n in enumerate((400, 250, 150)):
        X = rng.normal(0.2 * i, 1.0, size=(n, 4))
        y = (rng.random(n) < 1 / (1 + np.exp(-(2 * X[:, 0] - X[:, 1] - 2)))).astype(int)
        frame = pd.DataFrame({f"f{j}": X[:, j] for j in range(4)} | {"Class": y})
        frame.to_csv(root / f"{BANKS[i]}.csv", index=False)
    return load_dataset(root, label_column="Class")


def config(**privacy: object) -> SimulationConfig:
    return SimulationConfig(rounds=3, banks_per_round=3, batch_size=32, lr=0.1,
                            hidden=(8,), privacy=PrivacyOptions(**privacy))  # type: ignore[arg-type]


def test_target_epsilon_is_calibrated_reported_and_never_exceeded(dataset) -> None:  # type: ignore[no-untyped-def]
    result = run_simulation(dataset, config(target_epsilon=2.0))
    rounds = result.to_json()["rounds"]
    previous = {b: 0.0 for b in BANKS}
    for entry in rounds:
        assert set(entry["epsilon"]) == set(BANKS)
        assert entry["declined"] == []
        assert "federation_epsilon" not in entry
        for bank, eps in entry["epsilon"].items():
            assert previous[bank] < eps <= 2.0
            previous[bank] = eps
    # Calibrated to spend (almost) the whole target over the planned rounds.
    assert min(previous.values()) > 2.0 - 0.05


def test_over_budget_banks_decline_and_the_federation_stops(dataset, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Fixed noise too low for the budget: each bank affords a round or two, then declines;
    # once fewer than the secure-aggregation threshold can train, the federation stops.
    budget = 4.0
    cfg = config(target_epsilon=budget, noise_multiplier=1.0, state_dir=str(tmp_path))
    cfg.rounds = 4
    result = run_simulation(dataset, cfg)
    assert 1 <= len(result.rounds) < 4
    spent = {b: 0.0 for b in BANKS}
    for rec in result.rounds:
        assert rec.privacy["declined"] == rec.declined
        for bank in BANKS:
            eps = rec.privacy["epsilon"].get(bank, 0.0)
            assert eps <= budget
            if bank in rec.declined:
                assert eps == spent[bank]  # declining spends nothing
            spent[bank] = eps
    for bank in BANKS:  # the saved ledgers never exceed the budget either
        assert PrivacyAccountant.load(privacy_state_path(tmp_path, bank)).epsilon() <= budget


def test_rerun_resumes_the_spent_budget_from_saved_state(dataset, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    opts = {"target_epsilon": 50.0, "noise_multiplier": 1.0, "state_dir": str(tmp_path)}
    first = run_simulation(dataset, config(**opts))
    spent = first.rounds[-1].privacy["epsilon"]
    for bank in BANKS:
        saved = PrivacyAccountant.load(privacy_state_path(tmp_path, bank))
        assert saved.epsilon() == pytest.approx(spent[bank])
    second = run_simulation(dataset, config(**opts))
    for bank in BANKS:
        assert second.rounds[0].privacy["epsilon"][bank] > spent[bank]
    # A lower lifetime target than already spent: no noise can fit, every bank declines.
    low = min(spent.values()) / 2
    with pytest.raises(FraudflError, match="no training round completed"):
        run_simulation(dataset, config(target_epsilon=low, state_dir=str(tmp_path)))
    final = second.rounds[-1].privacy["epsilon"]
    for bank in BANKS:  # declining spent nothing
        saved = PrivacyAccountant.load(privacy_state_path(tmp_path, bank))
        assert saved.epsilon() == pytest.approx(final[bank])


def test_bank_level_dp_reports_federation_epsilon_separately(dataset) -> None:  # type: ignore[no-untyped-def]
    result = run_simulation(dataset, config(bank_dp_clip=0.5, bank_dp_noise=1.0))
    eps = [r.privacy["federation_epsilon"] for r in result.rounds]
    assert all(a < b for a, b in itertools.pairwise(eps))
    assert all("epsilon" not in r.privacy for r in result.rounds)


def test_inconsistent_options_are_user_errors() -> None:
    with pytest.raises(FraudflError, match="--bank-dp-noise"):
        PrivacyOptions(bank_dp_clip=1.0)
    with pytest.raises(FraudflError, match="--delta"):
        PrivacyOptions(delta=1e-5)


def test_a_delta_not_below_one_over_records_is_flagged(dataset, caplog) -> None:  # type: ignore[no-untyped-def]
    cfg = config(noise_multiplier=1.0, delta=0.01)  # banks have 120-320 training records
    cfg.rounds = 1
    with caplog.at_level("WARNING", logger="fraudfl.privacy.accountant"):
        run_simulation(dataset, cfg)
    assert {r.getMessage().split(":")[0] for r in caplog.records
            if "vacuous" in r.getMessage()} == set(BANKS)
