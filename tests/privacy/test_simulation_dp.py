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
from fraudfl.privacy.federation import state_path
from fraudfl.privacy.options import PrivacyOptions
from fraudfl.simulation import SimulationConfig, run_simulation

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
    result = run_simulation(dataset, config(target_epsilon=2.0), progress=False)
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


def test_over_budget_banks_decline_and_the_federation_goes_on(dataset, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Fixed noise too low for the budget: each bank affords a round or two, then declines.
    budget = 4.0
    cfg = config(target_epsilon=budget, noise_multiplier=1.0, state_dir=str(tmp_path))
    cfg.rounds = 4
    result = run_simulation(dataset, cfg, progress=False)
    spent = {b: 0.0 for b in BANKS}
    declined_once: set[str] = set()
    for rec in result.rounds:
        assert rec.privacy["declined"] == rec.declined
        for bank in BANKS:
            eps = rec.privacy["epsilon"].get(bank, 0.0)
            assert eps <= budget
            if bank in rec.declined:
                assert eps == spent[bank]  # declining spends nothing
                declined_once.add(bank)
            else:
                assert bank not in declined_once  # same noise and steps: once out, always out
                assert eps > spent[bank]
            spent[bank] = eps
    assert declined_once == set(BANKS)
    # Nobody trained in the last round, so the global model did not move.
    rounds = result.to_json()["rounds"]
    assert sorted(result.rounds[-1].declined) == sorted(BANKS)
    assert rounds[-1]["global"] == rounds[-2]["global"]


def test_rerun_resumes_the_spent_budget_from_saved_state(dataset, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    opts = {"target_epsilon": 50.0, "noise_multiplier": 1.0, "state_dir": str(tmp_path)}
    first = run_simulation(dataset, config(**opts), progress=False)
    spent = first.rounds[-1].privacy["epsilon"]
    for bank in BANKS:
        saved = PrivacyAccountant.load(state_path(tmp_path, bank))
        assert saved.epsilon() == pytest.approx(spent[bank])
    second = run_simulation(dataset, config(**opts), progress=False)
    for bank in BANKS:
        assert second.rounds[0].privacy["epsilon"][bank] > spent[bank]
    # A lower lifetime target than already spent: no noise can fit, every bank declines.
    low = min(spent.values()) / 2
    third = run_simulation(dataset, config(target_epsilon=low, state_dir=str(tmp_path)),
                           progress=False)
    assert all(sorted(r.declined) == sorted(BANKS) for r in third.rounds)
    final = second.rounds[-1].privacy["epsilon"]
    assert third.rounds[-1].privacy["epsilon"] == pytest.approx(final)


def test_bank_level_dp_reports_federation_epsilon_separately(dataset) -> None:  # type: ignore[no-untyped-def]
    result = run_simulation(dataset, config(bank_dp_clip=0.5, bank_dp_noise=1.0), progress=False)
    eps = [r.privacy["federation_epsilon"] for r in result.rounds]
    assert all(a < b for a, b in itertools.pairwise(eps))
    assert all("epsilon" not in r.privacy for r in result.rounds)


def test_inconsistent_options_are_user_errors() -> None:
    with pytest.raises(FraudflError, match="--bank-dp-noise"):
        PrivacyOptions(bank_dp_clip=1.0)
    with pytest.raises(FraudflError, match="--delta"):
        PrivacyOptions(delta=1e-5)


def test_a_callers_trainer_is_never_silently_replaced_by_the_private_one(dataset) -> None:  # type: ignore[no-untyped-def]
    from fraudfl.simulation import plain_trainer

    with pytest.raises(ValueError, match="FederationPrivacy"):
        run_simulation(dataset, config(noise_multiplier=1.0), trainer=plain_trainer,
                       progress=False)


def test_a_delta_not_below_one_over_records_is_flagged(dataset, caplog) -> None:  # type: ignore[no-untyped-def]
    cfg = config(noise_multiplier=1.0, delta=0.01)  # banks have 120-320 training records
    cfg.rounds = 1
    with caplog.at_level("WARNING", logger="fraudfl.privacy.federation"):
        run_simulation(dataset, cfg, progress=False)
    assert {r.getMessage().split(":")[0] for r in caplog.records
            if "vacuous" in r.getMessage()} == set(BANKS)
