"""Deterministic stratified train/validation split of one bank's frame."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fraudfl.data.schema import Schema
from fraudfl.errors import FraudflError


def train_val_split(
    frame: pd.DataFrame, schema: Schema, val_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split each class separately so both parts keep the label mix (rare frauds included).

    Each class contributes ``round(n_class * val_fraction)`` rows to validation; row order within
    each part follows the input. The same frame, fraction and seed give the same split.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise FraudflError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if schema.label not in frame.columns:
        raise FraudflError(f"cannot split: the frame has no label column '{schema.label}'")
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
