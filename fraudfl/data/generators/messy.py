"""What real bank exports look like, added to the synthetic banks (``generate-data banks --messy``).

On top of :mod:`fraudfl.data.generators.banks` each bank's file gets:

* **missing values, per bank and informative**: ``distance_from_home_km`` missing at a
  bank-specific rate (0-30%), more often in fraud rows; ``amount_to_typical`` missing when the
  card has no history (3% of legitimate rows, 30% of fraud); one bank in four does not record
  ``card_age_days`` at all; half of the banks' legacy systems write ``-999`` (a declared
  missing-value marker) for some ``tx_count_24h``; some ``card_type`` cells are empty;
* **high-cardinality ids**: ``merchant_id`` (400 merchants per category, Zipf popularity) where
  half of the ring fraud happens at a few compromised merchants shared across banks, and
  ``device_id`` (online payments only, so missing otherwise) where fraudsters reuse a small pool
  of devices at every bank;
* **heavy tails**: 1% of legitimate amounts are multiplied by a Pareto(1.5) factor;
* **a timestamp column** (ISO 8601) declared as the schema's ``time`` instead of an ``hour``
  column.

The schema hashes the two id columns, quantile-transforms the skewed numerics and declares
``-999`` as missing.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from fraudfl.data.schema import Schema

MERCHANTS_PER_CATEGORY = 400
COMPROMISED_PER_CATEGORY = 3
COMPROMISED_SHARE = 0.5
FRAUD_DEVICES = 40
FRAUD_DEVICE_SHARE = 0.6
DEVICE_UNIVERSE = 2_000_000
MISSING_MARKER = "-999"
ID_BUCKETS = 256

NUMERIC = [
    "amount",
    "amount_to_typical",
    "tx_count_24h",
    "distance_from_home_km",
    "new_merchant",
    "card_age_days",
]
CATEGORICAL = ["merchant_category", "channel", "card_type", "merchant_id", "device_id"]
TIME = "timestamp"
QUANTILE = ["amount", "amount_to_typical", "tx_count_24h", "distance_from_home_km",
            "card_age_days"]

BoolArray = npt.NDArray[np.bool_]


def messy_schema(label: str, categories: dict[str, list[str]], hash_key: str) -> Schema:
    return Schema(
        label=label,
        numeric=list(NUMERIC),
        categorical=list(CATEGORICAL),
        drop=["transaction_id"],
        categories=categories,
        missing_values=[MISSING_MARKER],
        transforms=dict.fromkeys(QUANTILE, "quantile"),
        hashed=dict.fromkeys(["merchant_id", "device_id"], ID_BUCKETS),
        hash_key=hash_key,
        time=TIME,
    )


def _zipf_rank(rng: np.random.Generator, n: int, size: int) -> npt.NDArray[np.int64]:
    weights = 1.0 / np.arange(1, size + 1) ** 1.1
    return rng.choice(size, n, p=weights / weights.sum())


def add_mess(
    frame: pd.DataFrame, is_fraud: BoolArray, bank: int, rng: np.random.Generator,
    shared: np.random.Generator,
) -> pd.DataFrame:
    """The bank's frame with ids, missing values and heavy tails; ``hour`` removed.

    ``shared`` draws what all banks have in common (compromised merchants, fraud devices) and
    must be seeded identically for every bank; ``rng`` is the bank's own.
    """
    n = len(frame)
    out = frame.drop(columns=["hour"]).copy()
    legit = ~is_fraud
    tail = legit & (rng.random(n) < 0.01)
    amount = out["amount"].to_numpy(dtype=np.float64).copy()
    amount[tail] *= 1.0 + rng.pareto(1.5, int(tail.sum()))
    out["amount"] = np.round(amount, 2)

    category = out["merchant_category"].to_numpy(dtype=object)
    rank = _zipf_rank(rng, n, MERCHANTS_PER_CATEGORY)
    compromised = shared.integers(50, MERCHANTS_PER_CATEGORY, COMPROMISED_PER_CATEGORY)
    at_compromised = is_fraud & (rng.random(n) < COMPROMISED_SHARE)
    rank[at_compromised] = rng.choice(compromised, int(at_compromised.sum()))
    out["merchant_id"] = [f"{c}-{r:04d}" for c, r in zip(category, rank, strict=True)]

    online = out["channel"].to_numpy(dtype=object) == "online"
    devices = rng.integers(0, DEVICE_UNIVERSE, n)
    fraud_pool = shared.integers(0, DEVICE_UNIVERSE, FRAUD_DEVICES)
    reuse = is_fraud & (rng.random(n) < FRAUD_DEVICE_SHARE)
    devices[reuse] = rng.choice(fraud_pool, int(reuse.sum()))
    device = np.array([f"dev{d:07d}" for d in devices], dtype=object)
    device[~online | (rng.random(n) < 0.1)] = None
    out["device_id"] = device

    distance_rate = rng.uniform(0.0, 0.3)
    p_distance = np.where(is_fraud, distance_rate + 0.2, distance_rate)
    _blank(out, "distance_from_home_km", rng.random(n) < p_distance)
    _blank(out, "amount_to_typical", rng.random(n) < np.where(is_fraud, 0.3, 0.03))
    _blank(out, "card_age_days", np.full(n, bank % 4 == 3) | (rng.random(n) < 0.02))
    if bank % 2 == 1:
        marked = rng.random(n) < rng.uniform(0.02, 0.1)
        counts = out["tx_count_24h"].astype(object)
        counts[marked] = int(MISSING_MARKER)
        out["tx_count_24h"] = counts
    _blank(out, "card_type", rng.random(n) < rng.uniform(0.0, 0.08))
    return out


def _blank(frame: pd.DataFrame, column: str, mask: BoolArray) -> None:
    values = frame[column].astype(object)
    values[mask] = None
    frame[column] = values
