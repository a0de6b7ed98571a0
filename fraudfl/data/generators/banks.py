"""Synthetic multi-bank card transactions with shared fraud rings and bank-specific fraud.

Every transaction has a customer (typical spend), a merchant category, a channel, an hour and
behaviour features a bank would compute from the card's history. Legitimate behaviour shifts from
bank to bank (``feature_shift``). Fraud comes from:

* four *rings* shared across banks, each hitting mostly a different subset of banks
  (``ring_locality`` of a bank's ring fraud comes from its "home" ring), so a model needs many
  banks' data to know all rings;
* one pattern specific to each bank (a merchant/channel/hour combination);
* opportunistic fraud that looks almost legitimate, so the task is never trivial.

Each pattern feature is present only with probability ``PATTERN_FIDELITY`` in a fraud row;
otherwise the row keeps the legitimate value. Bank sizes follow a power law (bank_00 the largest)
and fraud rates vary per bank (``label_skew``) within realistic 0.1%-2%.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from fraudfl.data.generators.common import FILE_FORMATS, prepare_output_dir, write_dataset
from fraudfl.data.generators.messy import add_mess, messy_schema
from fraudfl.data.schema import Schema
from fraudfl.errors import FraudflError

log = logging.getLogger(__name__)

LABEL = "is_fraud"
NUMERIC = [
    "amount",
    "hour",
    "amount_to_typical",
    "tx_count_24h",
    "distance_from_home_km",
    "new_merchant",
    "card_age_days",
]
CATEGORICAL = ["merchant_category", "channel", "card_type"]
DROP = ["transaction_id", "timestamp"]

MERCHANTS = [
    "grocery",
    "restaurant",
    "fuel",
    "pharmacy",
    "clothing",
    "electronics",
    "travel",
    "jewelry",
    "gaming",
    "digital_goods",
    "cash_withdrawal",
]
M = {name: i for i, name in enumerate(MERCHANTS)}
CASH = M["cash_withdrawal"]
MERCHANT_WEIGHTS = np.array([26, 18, 12, 6, 9, 6, 4, 1.5, 4, 6.5, 7], dtype=np.float64)
# Log-multiplier of a category's amounts relative to the customer's typical amount.
MERCHANT_LOG_AMOUNT = np.array([0, -0.2, 0.1, -0.3, 0.3, 0.8, 1.1, 1.2, -0.5, -0.8, 0.5])
CHANNELS = ["pos", "contactless", "online", "atm"]
POS, CONTACTLESS, ONLINE, ATM = range(4)
# P(channel | merchant); only cash withdrawals happen at ATMs.
MERCHANT_CHANNEL = np.array(
    [
        [0.45, 0.50, 0.05, 0],
        [0.40, 0.50, 0.10, 0],
        [0.50, 0.50, 0.00, 0],
        [0.45, 0.45, 0.10, 0],
        [0.40, 0.30, 0.30, 0],
        [0.35, 0.15, 0.50, 0],
        [0.20, 0.05, 0.75, 0],
        [0.70, 0.20, 0.10, 0],
        [0.05, 0.05, 0.90, 0],
        [0.00, 0.02, 0.98, 0],
        [0.00, 0.00, 0.00, 1],
    ]
)
CARD_TYPES = ["debit", "credit"]
# Relative frequency of legitimate transactions per hour of day.
HOUR_WEIGHTS = np.array(
    [10, 6, 4, 3, 3, 5, 15, 30, 40, 50, 55, 60, 65, 60, 55, 55, 60, 65, 60, 50, 40, 30, 22, 15],
    dtype=np.float64,
)
NIGHT_HOURS = np.arange(0, 6)

PATTERN_FIDELITY = 0.9
N_RINGS = 4
OPPORTUNISTIC_SHARE = 0.1
BANK_PATTERN_SHARE = 0.25
MIN_FRAUD_RATE, MAX_FRAUD_RATE = 0.0012, 0.018
MIN_BANK_ROWS = 100
START = np.datetime64("2026-01-01T00:00:00")
DAYS = 90

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass
class Rows:
    """Columns under construction: codes for categoricals, logs for multiplicative effects."""

    typical_log: FloatArray
    merchant: IntArray
    channel: IntArray
    log_ratio: FloatArray
    hour: IntArray
    tx_count_24h: IntArray
    distance_km: FloatArray
    new_merchant: IntArray
    card_age_days: IntArray
    card_type: IntArray


@dataclass(frozen=True)
class BankProfile:
    """How one bank's customers differ from the others' (legitimate behaviour)."""

    amount_shift: float
    merchant_logits: FloatArray
    online_shift: float
    velocity: float
    distance_scale: float
    new_merchant_rate: float
    card_age_mean: float
    credit_share: float
    local_merchant: int
    local_channel: int
    local_hour_start: int


def _profile(rng: np.random.Generator, shift: float) -> BankProfile:
    local_merchant = int(rng.choice([m for m in range(len(MERCHANTS)) if m != CASH]))
    channel_probs = MERCHANT_CHANNEL[local_merchant]
    return BankProfile(
        amount_shift=float(rng.normal(0, 0.4 * shift)),
        merchant_logits=np.log(MERCHANT_WEIGHTS) + rng.normal(0, 0.6 * shift, len(MERCHANTS)),
        online_shift=float(rng.normal(0, 0.8 * shift)),
        velocity=2.0 * float(np.exp(rng.normal(0, 0.3 * shift))),
        distance_scale=float(np.exp(rng.normal(np.log(6.0), 0.5 * shift))),
        new_merchant_rate=float(np.clip(0.12 * np.exp(rng.normal(0, 0.3 * shift)), 0.02, 0.4)),
        card_age_mean=1100.0 * float(np.exp(rng.normal(0, 0.3 * shift))),
        credit_share=float(np.clip(0.4 + rng.normal(0, 0.15 * shift), 0.05, 0.95)),
        local_merchant=local_merchant,
        local_channel=int(rng.choice(4, p=channel_probs)),
        local_hour_start=int(rng.integers(0, 24)),
    )


def _categorical(rng: np.random.Generator, probs: FloatArray) -> IntArray:
    """One draw per row from row-wise probabilities ``probs`` (rows x categories)."""
    cdf = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    u = rng.random((len(probs), 1))
    codes: IntArray = np.minimum((u > cdf).sum(axis=1), probs.shape[1] - 1).astype(np.int64)
    return codes


def _channels(rng: np.random.Generator, merchant: IntArray, online_shift: float) -> IntArray:
    probs = MERCHANT_CHANNEL[merchant].copy()
    probs[:, ONLINE] *= np.exp(online_shift)
    return _categorical(rng, probs)


def _legit(rng: np.random.Generator, n: int, p: BankProfile) -> Rows:
    merchant_probs = np.exp(p.merchant_logits - p.merchant_logits.max())
    merchant = rng.choice(len(MERCHANTS), size=n, p=merchant_probs / merchant_probs.sum())
    return Rows(
        typical_log=rng.normal(3.4 + p.amount_shift, 0.55, n),
        merchant=merchant,
        channel=_channels(rng, merchant, p.online_shift),
        log_ratio=MERCHANT_LOG_AMOUNT[merchant] + rng.normal(0, 0.45, n),
        hour=rng.choice(24, size=n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum()),
        tx_count_24h=1 + rng.poisson(p.velocity, n),
        distance_km=p.distance_scale * np.exp(rng.normal(0, 0.8, n)),
        new_merchant=(rng.random(n) < p.new_merchant_rate).astype(np.int64),
        card_age_days=(1 + rng.exponential(p.card_age_mean, n)).astype(np.int64),
        card_type=(rng.random(n) < p.credit_share).astype(np.int64),
    )


PatternFn = Callable[[np.random.Generator, Rows, IntArray, BankProfile], None]


def _some(rng: np.random.Generator, idx: IntArray) -> IntArray:
    """The rows of ``idx`` that show this particular pattern feature."""
    return idx[rng.random(len(idx)) < PATTERN_FIDELITY]


def _ring_night_online(rng: np.random.Generator, r: Rows, idx: IntArray, p: BankProfile) -> None:
    """Online electronics/jewelry/digital goods at night at new merchants, far above usual."""
    s = _some(rng, idx)
    r.merchant[s] = rng.choice(
        [M["electronics"], M["jewelry"], M["digital_goods"]], size=len(s), p=[0.6, 0.15, 0.25]
    )
    r.channel[_some(rng, idx)] = ONLINE
    s = _some(rng, idx)
    r.hour[s] = rng.choice(NIGHT_HOURS, size=len(s))
    s = _some(rng, idx)
    r.log_ratio[s] = rng.normal(np.log(6.0), 0.4, len(s))
    r.new_merchant[_some(rng, idx)] = 1


def _ring_cash_out(rng: np.random.Generator, r: Rows, idx: IntArray, p: BankProfile) -> None:
    """Cloned cards emptied at ATMs: many large withdrawals within a day."""
    r.merchant[_some(rng, idx)] = CASH
    s = _some(rng, idx)
    r.tx_count_24h[s] = 1 + rng.poisson(7.0, len(s))
    s = _some(rng, idx)
    r.log_ratio[s] = rng.normal(np.log(5.0), 0.4, len(s))


def _ring_card_testing(rng: np.random.Generator, r: Rows, idx: IntArray, p: BankProfile) -> None:
    """Tiny online purchases in gaming/digital goods at new merchants to test stolen cards."""
    s = _some(rng, idx)
    r.merchant[s] = rng.choice([M["gaming"], M["digital_goods"]], size=len(s))
    r.channel[_some(rng, idx)] = ONLINE
    s = _some(rng, idx)
    r.log_ratio[s] = np.log(rng.uniform(0.5, 3.0, len(s))) - r.typical_log[s]
    r.new_merchant[_some(rng, idx)] = 1
    r.card_type[_some(rng, idx)] = 1


def _ring_counterfeit(rng: np.random.Generator, r: Rows, idx: IntArray, p: BankProfile) -> None:
    """Counterfeit cards swiped in shops far from home for resellable goods."""
    s = _some(rng, idx)
    r.merchant[s] = rng.choice(
        [M["jewelry"], M["electronics"], M["clothing"]], size=len(s), p=[0.4, 0.3, 0.3]
    )
    r.channel[_some(rng, idx)] = POS
    s = _some(rng, idx)
    r.distance_km[s] = np.exp(rng.normal(np.log(300.0), 0.7, len(s)))
    s = _some(rng, idx)
    r.log_ratio[s] = rng.normal(np.log(3.0), 0.5, len(s))


RINGS: list[PatternFn] = [
    _ring_night_online,
    _ring_cash_out,
    _ring_card_testing,
    _ring_counterfeit,
]


def _bank_specific(rng: np.random.Generator, r: Rows, idx: IntArray, p: BankProfile) -> None:
    """This bank's own problem: one merchant/channel, a 3-hour window, young cards."""
    r.merchant[_some(rng, idx)] = p.local_merchant
    r.channel[_some(rng, idx)] = p.local_channel
    s = _some(rng, idx)
    r.hour[s] = (p.local_hour_start + rng.integers(0, 3, len(s))) % 24
    s = _some(rng, idx)
    r.log_ratio[s] = rng.normal(np.log(2.5), 0.5, len(s))
    s = _some(rng, idx)
    r.card_age_days[s] = rng.integers(1, 30, len(s))


def _opportunistic(rng: np.random.Generator, r: Rows, idx: IntArray, p: BankProfile) -> None:
    """Friendly/first-party fraud: ordinary-looking purchases, somewhat larger than usual."""
    r.log_ratio[idx] += 0.6
    s = idx[rng.random(len(idx)) < 0.3]
    r.new_merchant[s] = 1


def _make_consistent(rng: np.random.Generator, r: Rows, p: BankProfile) -> None:
    """Cash withdrawals happen at ATMs and only there."""
    r.channel[r.merchant == CASH] = ATM
    wrong_atm = np.flatnonzero((r.channel == ATM) & (r.merchant != CASH))
    r.channel[wrong_atm] = _channels(rng, r.merchant[wrong_atm], p.online_shift)


def _bank_frame(
    rng: np.random.Generator,
    profile: BankProfile,
    n: int,
    n_fraud: int,
    ring_mix: FloatArray,
) -> tuple[pd.DataFrame, IntArray]:
    """The bank's rows (frauds first) and each row's fraud pattern (-1 for legitimate)."""
    rows = _legit(rng, n, profile)
    # Fraud rows: first n_fraud, assigned to patterns; order is shuffled when splitting.
    pattern_probs = np.concatenate(
        [
            (1 - OPPORTUNISTIC_SHARE - BANK_PATTERN_SHARE) * ring_mix,
            [BANK_PATTERN_SHARE],
            [OPPORTUNISTIC_SHARE],
        ]
    )
    pattern = rng.choice(len(pattern_probs), size=n_fraud, p=pattern_probs)
    patterns: list[PatternFn] = [*RINGS, _bank_specific, _opportunistic]
    for k, apply in enumerate(patterns):
        idx = np.flatnonzero(pattern == k)
        if len(idx):
            apply(rng, rows, idx, profile)
    _make_consistent(rng, rows, profile)
    amount = np.exp(rows.typical_log + rows.log_ratio)
    cash = rows.merchant == CASH
    amount[cash] = np.maximum(20.0, np.round(amount[cash] / 10.0) * 10.0)
    amount = np.maximum(np.round(amount, 2), 0.01)
    # The bank's estimate of the customer's typical spend comes from a finite history.
    typical_estimate = np.exp(rows.typical_log + rng.normal(0, 0.15, n))
    seconds = rng.integers(0, DAYS, n) * 86_400 + rows.hour * 3600 + rng.integers(0, 3600, n)
    is_fraud = np.zeros(n, dtype=np.int64)
    is_fraud[:n_fraud] = 1
    row_pattern = np.full(n, -1, dtype=np.int64)
    row_pattern[:n_fraud] = pattern
    frame = pd.DataFrame(
        {
            "transaction_id": np.zeros(n, dtype=np.int64),
            "timestamp": np.datetime_as_string(START + seconds.astype("timedelta64[s]"), unit="s"),
            "amount": amount,
            "hour": rows.hour,
            "amount_to_typical": np.round(amount / typical_estimate, 3),
            "tx_count_24h": rows.tx_count_24h,
            "distance_from_home_km": np.round(rows.distance_km, 1),
            "new_merchant": rows.new_merchant,
            "card_age_days": rows.card_age_days,
            "merchant_category": np.array(MERCHANTS)[rows.merchant],
            "channel": np.array(CHANNELS)[rows.channel],
            "card_type": np.array(CARD_TYPES)[rows.card_type],
            LABEL: is_fraud,
        }
    )
    return frame, row_pattern


def bank_sizes(n_banks: int, total: int, power: float) -> IntArray:
    """Zipf-like sizes: bank k (0-based) gets a share proportional to (k + 1)^-power."""
    weights = np.arange(1, n_banks + 1, dtype=np.float64) ** -power
    sizes: IntArray = np.floor(total * weights / weights.sum()).astype(np.int64)
    sizes[0] += total - sizes.sum()
    return sizes


def bank_schema(*, messy: bool = False, hash_key: str | None = None) -> Schema:
    if messy:
        assert hash_key is not None
        return messy_schema(
            LABEL,
            {"merchant_category": list(MERCHANTS), "channel": list(CHANNELS),
             "card_type": list(CARD_TYPES)},
            hash_key,
        )
    return Schema(
        label=LABEL,
        numeric=list(NUMERIC),
        categorical=list(CATEGORICAL),
        drop=list(DROP),
        task="binary",
        num_classes=2,
        categories={
            "merchant_category": list(MERCHANTS),
            "channel": list(CHANNELS),
            "card_type": list(CARD_TYPES),
        },
    )


def _check_args(
    n_banks: int,
    total: int,
    fraud_rate: float,
    size_power_law: float,
    label_skew: float,
    feature_shift: float,
    test_fraction: float,
    ring_locality: float,
    file_format: str,
) -> None:
    if n_banks < 1:
        raise FraudflError(f"number of banks must be >= 1, got {n_banks}")
    for name, value in (("size power law", size_power_law), ("label skew", label_skew),
                        ("feature shift", feature_shift)):
        if not value >= 0:  # also refuses NaN
            raise FraudflError(f"{name} must be >= 0, got {value}")
    smallest = int(bank_sizes(n_banks, total, size_power_law).min())
    if smallest < MIN_BANK_ROWS:
        raise FraudflError(
            f"{total} transactions are too few for {n_banks} banks with size power law "
            f"{size_power_law}: the smallest bank would have {smallest} rows "
            f"(at least {MIN_BANK_ROWS} needed)"
        )
    if not MIN_FRAUD_RATE <= fraud_rate <= MAX_FRAUD_RATE:
        raise FraudflError(
            f"fraud rate must be within [{MIN_FRAUD_RATE}, {MAX_FRAUD_RATE}], got {fraud_rate}"
        )
    if not 0.0 <= test_fraction < 1.0:
        raise FraudflError(f"test fraction must be in [0, 1), got {test_fraction}")
    if not 0.0 <= ring_locality <= 1.0:
        raise FraudflError(f"ring locality must be in [0, 1], got {ring_locality}")
    if file_format not in FILE_FORMATS:
        raise FraudflError(f"file format must be one of {list(FILE_FORMATS)}, got {file_format!r}")


def generate_bank_data(
    out_dir: Path,
    *,
    n_banks: int = 8,
    total_transactions: int = 200_000,
    fraud_rate: float = 0.005,
    size_power_law: float = 1.2,
    label_skew: float = 0.5,
    feature_shift: float = 0.5,
    test_fraction: float = 0.2,
    seed: int = 0,
    file_format: str = "csv",
    ring_locality: float = 0.9,
    overwrite: bool = False,
    messy: bool = False,
) -> Path:
    """Write ``bank_00 .. bank_NN`` files, ``test`` and ``schema.toml`` into ``out_dir``.

    ``total_transactions`` counts all rows, the global test set (``test_fraction`` of every bank,
    same fraud rate as that bank) included. ``messy`` adds missing values, high-cardinality ids,
    heavy tails and a time column (:mod:`fraudfl.data.generators.messy`). Returns ``out_dir``.
    """
    _check_args(
        n_banks,
        total_transactions,
        fraud_rate,
        size_power_law,
        label_skew,
        feature_shift,
        test_fraction,
        ring_locality,
        file_format,
    )
    prepare_output_dir(out_dir, overwrite=overwrite)
    rng = np.random.default_rng(seed)
    sizes = bank_sizes(n_banks, total_transactions, size_power_law)
    z = rng.normal(0, 1, n_banks)
    rates = np.clip(
        fraud_rate * np.exp(label_skew * z - label_skew**2 / 2), MIN_FRAUD_RATE, MAX_FRAUD_RATE
    )
    other = (1 - ring_locality) / (N_RINGS - 1)
    banks: dict[str, pd.DataFrame] = {}
    tests: list[pd.DataFrame] = []
    next_id = 1
    width = max(2, len(str(n_banks - 1)))
    for k in range(n_banks):
        ring_mix = np.full(N_RINGS, other)
        ring_mix[k % N_RINGS] = ring_locality
        n = int(sizes[k])
        n_test = round(n * test_fraction)
        n_train = n - n_test
        fraud_train = max(1, round(rates[k] * n_train))
        fraud_test = max(1, round(rates[k] * n_test)) if n_test else 0
        frame, _ = _bank_frame(
            rng, _profile(rng, feature_shift), n, fraud_train + fraud_test, ring_mix
        )
        if messy:
            # Own streams, so the clean columns are the same with and without --messy; the
            # shared stream restarts for every bank (the same compromised merchants and devices).
            frame = add_mess(
                frame, frame[LABEL].to_numpy() == 1, k, np.random.default_rng([seed, 11, k]),
                np.random.default_rng([seed, 7]),
            )
        fraud_idx = rng.permutation(fraud_train + fraud_test)
        legit_idx = rng.permutation(np.arange(fraud_train + fraud_test, n))
        test_idx = np.concatenate([fraud_idx[:fraud_test], legit_idx[: n_test - fraud_test]])
        train_idx = np.concatenate([fraud_idx[fraud_test:], legit_idx[n_test - fraud_test :]])
        # Banks export in time order; ids follow it.
        train = frame.iloc[train_idx].sort_values("timestamp", kind="stable")
        train["transaction_id"] = np.arange(next_id, next_id + len(train), dtype=np.int64)
        next_id += len(train)
        banks[f"bank_{k:0{width}d}"] = train.reset_index(drop=True)
        tests.append(frame.iloc[test_idx])
    test = pd.concat(tests).sort_values("timestamp", kind="stable").reset_index(drop=True)
    test["transaction_id"] = np.arange(next_id, next_id + len(test), dtype=np.int64)
    # A synthetic dataset is reproducible from its seed, its hashing key included; a real
    # federation's key comes from `secrets` (schema inference, `fraudfl init`).
    hash_key = np.random.default_rng([seed, 13]).bytes(16).hex() if messy else None
    write_dataset(out_dir, bank_schema(messy=messy, hash_key=hash_key), banks, test, file_format)
    log.info("wrote %d banks (%d transactions) to %s", n_banks, total_transactions, out_dir)
    return out_dir
