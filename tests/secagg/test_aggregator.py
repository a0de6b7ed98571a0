"""The simulator seam: SecureAggregator equals PlainAggregator within the quantisation bound."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudfl.data import load_dataset
from fraudfl.secagg import SecureSumConfig
from fraudfl.secagg.aggregator import SecureAggregator
from fraudfl.simulation import SimulationConfig, run_simulation
from fraudfl.strategy import Contribution, PlainAggregator, SummedUpdate


def _contributions(n: int, dim: int, seed: int = 0) -> list[Contribution]:
    rng = np.random.default_rng(seed)
    return [
        Contribution(f"bank_{i}", float(rng.integers(50, 5000)),
                     rng.normal(0, 0.05, dim).astype(np.float32), partial=i == 0)
        for i in range(n)
    ]


def _assert_close(secure: SummedUpdate, plain: SummedUpdate, bound: tuple[float, float]) -> None:
    assert secure.num_participants == plain.num_participants
    assert secure.num_partial == plain.num_partial
    assert np.max(np.abs(secure.weighted_update_sum - plain.weighted_update_sum)) <= bound[0]
    assert abs(secure.weight_sum - plain.weight_sum) <= bound[1]


@pytest.mark.parametrize("neighbours", [0, 2])
def test_secure_sum_matches_plain_within_bound(neighbours: int) -> None:
    contribs = _contributions(6, 300)
    agg = SecureAggregator(SecureSumConfig(neighbours=neighbours), weight_scale=10_000.0)
    secure = agg.sum(1, contribs, 300)
    plain = PlainAggregator().sum(1, contribs, 300)
    _assert_close(secure, plain, agg.error_bound(6, 10_000.0))
    # and the mean update the strategy uses
    s, p = secure.mean_update(), plain.mean_update()
    assert s is not None and p is not None
    assert np.max(np.abs(s - p)) < 1e-5


def test_rounds_continue_and_new_banks_join() -> None:
    agg = SecureAggregator()
    agg.sum(1, _contributions(3, 10), 10)
    more = _contributions(5, 10, seed=1)
    secure = agg.sum(2, more, 10)
    scale = max(c.weight for c in more)
    _assert_close(secure, PlainAggregator().sum(2, more, 10), agg.error_bound(5, scale))


def test_a_single_contribution_is_not_revealed() -> None:
    out = SecureAggregator().sum(1, _contributions(1, 4), 4)
    assert out.num_participants == 0 and out.mean_update() is None


def _dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i, n in enumerate((300, 200, 120)):
        X = rng.normal(0.2 * i, 1.0, size=(n, 4))
        y = (rng.random(n) < 1 / (1 + np.exp(-(X @ [2.0, -1.0, 0.5, 0.0] - 2)))).astype(int)
        frame = pd.DataFrame({f"f{j}": X[:, j] for j in range(4)})
        frame["Class"] = y
        frame.to_csv(root / f"bank_{i}.csv", index=False)
    return root


class Comparing:
    """Runs both aggregators on every round's contributions and keeps the secure result."""

    def __init__(self) -> None:
        self.secure = SecureAggregator(SecureSumConfig(clip=2.0), weight_scale=1000.0)
        self.rounds = 0

    def sum(self, server_round: int, contributions: Sequence[Contribution], dim: int
            ) -> SummedUpdate:
        secure = self.secure.sum(server_round, contributions, dim)
        plain = PlainAggregator().sum(server_round, contributions, dim)
        _assert_close(secure, plain, self.secure.error_bound(len(contributions), 1000.0))
        self.rounds += 1
        return secure


def test_simulation_with_secure_aggregation(tmp_path: Path) -> None:
    ds = load_dataset(_dataset(tmp_path / "data"), label_column="Class")
    cfg = SimulationConfig(rounds=2, banks_per_round=3, local_epochs=1, batch_size=32, lr=0.1,
                           model="logistic", seed=1)
    spy = Comparing()
    secure = run_simulation(ds, cfg, progress=False, aggregator=spy)
    plain = run_simulation(ds, cfg, progress=False)
    assert spy.rounds == 2
    a, b = secure.to_json(), plain.to_json()
    assert a["rounds"][-1]["global"]["loss"] == pytest.approx(b["rounds"][-1]["global"]["loss"],
                                                              abs=1e-4)


def test_simulate_cli_secure_aggregation_flag(tmp_path: Path) -> None:
    from fraudfl.cli import main

    data = _dataset(tmp_path / "data")
    args = ["simulate", "--data", str(data), "--label-column", "Class", "--rounds", "1",
            "--banks-per-round", "3", "--model", "logistic", "--no-progress"]
    out = tmp_path / "secure.json"
    assert main([*args, "--secure-aggregation", "--secagg-neighbours", "2",
                 "--out", str(out)]) == 0
    assert out.exists()
