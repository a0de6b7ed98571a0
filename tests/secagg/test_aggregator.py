"""Secure aggregation inside the round engine: `fraudfl simulate --secure-aggregation` runs the
real protocol and gives the model the plain sum gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudfl.data import load_dataset
from fraudfl.simulation import SimulationConfig, run_simulation


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


@pytest.mark.parametrize("neighbours", [0, 2])
def test_simulation_with_secure_aggregation(tmp_path: Path, neighbours: int) -> None:
    ds = load_dataset(_dataset(tmp_path / "data"), label_column="Class")
    cfg = dict(rounds=2, banks_per_round=5, local_epochs=1, batch_size=32, lr=0.1,
               model="logistic", seed=1)
    secure = run_simulation(ds, SimulationConfig(**cfg, secure_aggregation=True,  # type: ignore[arg-type]
                                                 secagg_neighbours=neighbours))
    plain = run_simulation(ds, SimulationConfig(**cfg))  # type: ignore[arg-type]
    assert len(secure.rounds) == 2
    # The same quantised sum, masked or not: bit-identical models.
    np.testing.assert_array_equal(secure.final_params, plain.final_params)
