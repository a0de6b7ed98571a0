"""Statistics of the synthetic multi-bank generator (small sizes keep this fast)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from fraudfl.data import FeaturePipeline, compute_stats, load_dataset
from fraudfl.data.generators import bank_sizes, generate_bank_data
from fraudfl.data.generators.banks import CHANNELS, MERCHANTS
from fraudfl.errors import FraudflError

TOTAL = 40_000


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_bank_data(
        tmp_path_factory.mktemp("banks") / "ds", n_banks=6, total_transactions=TOTAL, seed=11
    )


def digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_writes_the_directory_format_with_schema_and_test(generated: Path) -> None:
    names = sorted(p.name for p in generated.iterdir())
    assert names == [f"bank_0{k}.csv" for k in range(6)] + ["schema.toml", "test.csv"]
    ds = load_dataset(generated)
    assert ds.schema.label == "is_fraud" and ds.schema.task == "binary"
    assert ds.schema.drop == ["transaction_id", "timestamp"]
    assert ds.schema.categories["channel"] == CHANNELS
    assert ds.test is not None
    rows = sum(len(f) for f in ds.banks.values()) + len(ds.test)
    assert rows == TOTAL
    assert len(ds.test) == pytest.approx(0.2 * TOTAL, abs=6)


def test_fraud_rates_are_realistic_per_bank_and_overall(generated: Path) -> None:
    ds = load_dataset(generated)
    rates = [float(f["is_fraud"].mean()) for f in ds.banks.values()]
    assert all(0.001 <= r <= 0.02 for r in rates), rates
    assert len(set(np.round(rates, 4))) > 1  # label skew: rates differ between banks
    overall = float(ds.pooled()["is_fraud"].mean())
    assert 0.0025 <= overall <= 0.01
    assert ds.test is not None
    assert 0.001 <= float(ds.test["is_fraud"].mean()) <= 0.02


def test_bank_sizes_follow_a_power_law(generated: Path) -> None:
    ds = load_dataset(generated)
    sizes = [len(f) for f in ds.banks.values()]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 6
    # bank k has size ~ (k+1)^-1.2, so largest / smallest ~ 6^1.2 = 8.6
    assert sizes[0] / sizes[-1] == pytest.approx(6**1.2, rel=0.02)
    exact = bank_sizes(6, TOTAL, 1.2)
    assert exact.sum() == TOTAL
    assert np.log(exact[0] / exact[1]) / np.log(2) == pytest.approx(1.2, abs=0.01)
    assert set(bank_sizes(5, 1000, 0.0)) == {200}


def test_values_look_like_card_transactions(generated: Path) -> None:
    ds = load_dataset(generated)
    frame = ds.pooled()
    assert set(frame["merchant_category"]) == set(MERCHANTS)
    assert set(frame["channel"]) == set(CHANNELS)
    assert (frame["amount"] > 0).all() and 10 < frame["amount"].median() < 100
    assert frame["hour"].between(0, 23).all()
    assert set(frame["new_merchant"].unique()) == {0.0, 1.0}
    atm = frame["channel"] == "atm"
    assert (frame.loc[atm, "merchant_category"] == "cash_withdrawal").all()
    # Fraud concentrates in the patterns: e.g. night hours, high amounts vs typical.
    fraud = frame[frame["is_fraud"] == 1]
    legit = frame[frame["is_fraud"] == 0]
    assert (fraud["hour"] < 6).mean() > 3 * (legit["hour"] < 6).mean()
    assert fraud["amount_to_typical"].median() > 1.5 * legit["amount_to_typical"].median()


def test_rings_are_seen_mostly_at_their_home_banks(generated: Path) -> None:
    """bank_00's home ring is night-time online fraud, bank_01's ATM cash-out."""
    ds = load_dataset(generated)

    def fraud_share(bank: str, pattern: str) -> float:
        frame = ds.banks[bank]
        fraud = frame[frame["is_fraud"] == 1]
        if pattern == "night_online":
            hits = (fraud["channel"] == "online") & (fraud["hour"] < 6)
        else:
            hits = fraud["merchant_category"] == "cash_withdrawal"
        return float(hits.mean())

    assert fraud_share("bank_00", "night_online") > 0.3 > fraud_share("bank_01", "night_online")
    assert fraud_share("bank_01", "cash_out") > 0.3 > fraud_share("bank_00", "cash_out")


def test_deterministic_under_a_seed(tmp_path: Path) -> None:
    kwargs = {"n_banks": 3, "total_transactions": 3000, "seed": 5}
    a = generate_bank_data(tmp_path / "a", **kwargs)  # type: ignore[arg-type]
    b = generate_bank_data(tmp_path / "b", **kwargs)  # type: ignore[arg-type]
    c = generate_bank_data(tmp_path / "c", n_banks=3, total_transactions=3000, seed=6)
    assert digest(a) == digest(b)
    assert digest(a)["bank_00.csv"] != digest(c)["bank_00.csv"]


def test_heterogeneity_knobs_off(tmp_path: Path) -> None:
    out = generate_bank_data(
        tmp_path / "flat",
        n_banks=4,
        total_transactions=8000,
        size_power_law=0.0,
        label_skew=0.0,
        feature_shift=0.0,
        seed=1,
        file_format="parquet",
    )
    ds = load_dataset(out)
    assert [len(f) for f in ds.banks.values()] == [1600] * 4
    assert {int(f["is_fraud"].sum()) for f in ds.banks.values()} == {8}


def test_learnable_and_federation_beats_the_smallest_bank(generated: Path) -> None:
    """Pooled data (what federation approximates) beats the smallest bank's data alone."""
    ds = load_dataset(generated)
    pipe = FeaturePipeline.fit(sum(compute_stats(f, ds.schema) for f in ds.banks.values()))
    assert ds.test is not None
    x_test, y_test = pipe.transform(ds.test)
    base_rate = float(y_test.mean())

    def auprc(frame_x: np.ndarray, frame_y: np.ndarray) -> float:
        model = LogisticRegression(max_iter=2000).fit(frame_x, frame_y)
        return float(average_precision_score(y_test, model.decision_function(x_test)))

    pooled = auprc(*pipe.transform(ds.pooled()))
    smallest = auprc(*pipe.transform(ds.banks["bank_05"]))
    assert pooled > 10 * base_rate
    assert pooled > smallest + 0.05, (pooled, smallest)


def test_refuses_to_mix_with_an_existing_dataset(generated: Path, tmp_path: Path) -> None:
    with pytest.raises(FraudflError, match="already holds dataset files"):
        generate_bank_data(generated, n_banks=2, total_transactions=1000)
    out = generate_bank_data(tmp_path / "x", n_banks=3, total_transactions=3000)
    generate_bank_data(out, n_banks=2, total_transactions=2000, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "bank_00.csv",
        "bank_01.csv",
        "schema.toml",
        "test.csv",
    ]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"n_banks": 0}, "number of banks"),
        ({"total_transactions": 500}, "too few"),
        ({"fraud_rate": 0.2}, "fraud rate"),
        ({"test_fraction": 1.0}, "test fraction"),
        ({"file_format": "xlsx"}, "file format"),
        ({"feature_shift": float("nan")}, "feature shift must be >= 0, got nan"),
        ({"label_skew": -1.0}, "label skew must be >= 0, got -1.0"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, object], expected: str) -> None:
    with pytest.raises(FraudflError, match=expected):
        generate_bank_data(tmp_path / "x", **kwargs)  # type: ignore[arg-type]
