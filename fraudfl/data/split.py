"""Deterministic train/validation split of one bank's frame: by time when the schema has a time
column (the last rows validate, as they would in production), stratified by class otherwise."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fraudfl.data.schema import Schema
from fraudfl.errors import FraudflError


def train_val_split(
    frame: pd.DataFrame, schema: Schema, val_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split one bank's rows into training and validation parts.

    With a ``time`` column in the schema (and in the frame) the latest ``round(n *
    val_fraction)`` rows by time validate (rows without a time stay in training; ties keep the
    input order): :func:`time_split`. Otherwise each class is split separately so both parts keep
    the label mix (rare frauds included): each class contributes ``round(n_class *
    val_fraction)`` rows to validation. Row order within each part follows the input. The same
    frame, fraction and seed give the same split.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise FraudflError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if schema.label not in frame.columns:
        raise FraudflError(f"cannot split: the frame has no label column '{schema.label}'")
    if schema.time is not None and schema.time in frame.columns:
        return time_split(frame, schema.time, val_fraction)
    rng = np.random.default_rng(seed)
    labels = frame[schema.label].to_numpy()
    is_val = np.zeros(len(frame), dtype=bool)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        n_val = round(len(members) * val_fraction)
        is_val[rng.permutation(members)[:n_val]] = True
    train = frame.iloc[np.flatnonzero(~is_val)].reset_index(drop=True)
    val = frame.iloc[np.flatnonzero(is_val)].reset_index(drop=True)
    return train, val


def time_split(
    frame: pd.DataFrame, time_column: str, val_fraction: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The latest ``round(n * val_fraction)`` rows by ``time_column`` (Unix seconds, NaN for
    missing, as loaded) validate; the rest, and every row without a time, train."""
    if not 0.0 <= val_fraction < 1.0:
        raise FraudflError(f"val_fraction must be in [0, 1), got {val_fraction}")
    times = frame[time_column].to_numpy(dtype=np.float64)
    timed = np.flatnonzero(~np.isnan(times))
    n_val = min(round(len(frame) * val_fraction), len(timed))
    order = timed[np.argsort(times[timed], kind="stable")]
    is_val = np.zeros(len(frame), dtype=bool)
    is_val[order[len(order) - n_val :]] = True
    train = frame.iloc[np.flatnonzero(~is_val)].reset_index(drop=True)
    val = frame.iloc[np.flatnonzero(is_val)].reset_index(drop=True)
    return train, val
