from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def write_small_dataset(
    root: Path, *, sizes: tuple[int, ...] = (600, 300, 150, 80), test_rows: int = 400,
    seed: int = 0, multiclass: bool = False,
) -> Path:
    """Banks with a shared linear fraud signal plus a bank-specific feature shift."""
    rng = np.random.default_rng(seed)
    w = np.array([2.0, -1.5, 1.0, 0.0, 0.5])
    root.mkdir(parents=True, exist_ok=True)

    def frame(n: int, shift: float) -> pd.DataFrame:
        X = rng.normal(shift, 1.0, size=(n, 5))
        channel = rng.choice(["pos", "online", "atm"], size=n)
        logit = X @ w - 3.0 + (channel == "online") * 1.0
        if multiclass:
            label = np.digitize(logit + rng.normal(size=n), [-4.0, -2.0])
        else:
            label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
        data = {f"f{i}": X[:, i] for i in range(5)}
        return pd.DataFrame({"tx_id": np.arange(n), **data, "channel": channel, "Class": label})

    for i, n in enumerate(sizes):
        frame(n, 0.2 * i).to_csv(root / f"bank_{i}.csv", index=False)
    if test_rows:
        frame(test_rows, 0.3).to_csv(root / "test.csv", index=False)
    return root


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_small_dataset(tmp_path_factory.mktemp("banks") / "data")
