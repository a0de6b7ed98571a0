"""The FedProx paper's Synthetic(alpha, beta) generator."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fraudfl.data import load_dataset
from fraudfl.data.generators import generate_fedprox_synthetic
from fraudfl.data.generators.fedprox_synthetic import device_sizes


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_fedprox_synthetic(tmp_path_factory.mktemp("fedprox") / "s0", seed=0)


def test_shape_schema_and_sizes(synthetic: Path) -> None:
    ds = load_dataset(synthetic)
    assert ds.schema.task == "multiclass" and ds.schema.num_classes == 10
    assert ds.schema.label == "y" and len(ds.schema.numeric) == 60
    assert ds.bank_ids == [f"device_{k:02d}" for k in range(30)]
    # Each device has int(lognormal(4, 2)) + 50 samples, 80% of them in its own file.
    expected = device_sizes(np.random.default_rng(0), 30)
    assert (expected >= 50).all()
    train_sizes = np.array([len(f) for f in ds.banks.values()])
    np.testing.assert_array_equal(train_sizes, expected - np.round(expected * 0.2).astype(int))
    assert ds.test is not None and len(ds.test) == expected.sum() - train_sizes.sum()
    # Heavy-tailed sizes, as in the paper: the largest device dwarfs the median one.
    assert expected.max() > 5 * np.median(expected)


def test_labels_in_range(synthetic: Path) -> None:
    pooled = load_dataset(synthetic).pooled()
    assert pooled["y"].between(0, 9).all()
    assert pooled["y"].nunique() >= 5


def test_labels_are_linear_in_x_per_device(tmp_path: Path) -> None:
    """y = argmax(x W_k + b_k): each device's labels are linearly separable."""
    out = generate_fedprox_synthetic(tmp_path / "small", n_devices=6, n_features=8, seed=5)
    ds = load_dataset(out)
    largest = max(ds.banks.values(), key=len)
    assert len(largest) > 300
    x, y = largest.drop(columns=["y"]).to_numpy(), largest["y"].to_numpy()
    fit = LogisticRegression(C=1e3, max_iter=2000).fit(x, y).score(x, y)
    shuffled = np.random.default_rng(0).permutation(y)
    control = LogisticRegression(C=1e3, max_iter=2000).fit(x, shuffled).score(x, shuffled)
    assert fit > 0.97
    assert control < 0.9


def test_feature_variances_follow_j_to_the_minus_1_2(tmp_path: Path) -> None:
    out = generate_fedprox_synthetic(tmp_path / "iid", iid=True, n_devices=40, seed=1)
    ds = load_dataset(out)
    pooled = ds.pooled().drop(columns=["y"]).to_numpy()
    # IID: x ~ N(0, diag(j^-1.2)) on every device.
    assert np.abs(pooled.mean(axis=0)).max() < 0.15
    expected_var = np.arange(1, 61) ** -1.2
    np.testing.assert_allclose(pooled.var(axis=0), expected_var, rtol=0.15)


def test_beta_controls_input_heterogeneity(tmp_path: Path) -> None:
    def spread_of_device_means(beta: float, iid: bool) -> float:
        out = generate_fedprox_synthetic(
            tmp_path / f"b{beta}{iid}", alpha=0.0, beta=beta, iid=iid, n_devices=10, seed=2
        )
        means = [f.drop(columns=["y"]).to_numpy().mean() for f in load_dataset(out).banks.values()]
        return float(np.std(means))

    assert spread_of_device_means(0.0, True) < 0.2
    assert spread_of_device_means(5.0, False) > 1.5


def test_deterministic_under_a_seed(tmp_path: Path) -> None:
    def digest(seed: int, name: str) -> str:
        out = generate_fedprox_synthetic(tmp_path / name, n_devices=4, seed=seed)
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(out.iterdir()))).hexdigest()

    assert digest(5, "a") == digest(5, "b")
    assert digest(5, "a2") != digest(6, "c")
