"""The FedProx paper's Synthetic(alpha, beta) data (Li et al., 2020, section 5.1).

For device k: u_k ~ N(0, alpha), B_k ~ N(0, beta); W_k ~ N(u_k, 1) (60 x 10), b_k ~ N(u_k, 1);
v_k ~ N(B_k, 1) (60-dim); x ~ N(v_k, Sigma) with Sigma = diag(j^-1.2), j = 1..60;
y = argmax(x W_k + b_k). Device sizes are int(lognormal(4, 2)) + 50. alpha controls how much the
local models differ, beta how much the local inputs differ.

The IID variant follows the paper's code: one W ~ N(0, 1), b ~ N(0, 1) for all devices and
x ~ N(0, Sigma) everywhere.

As in the paper, each device's data is split locally (train / test); the devices' test shares
together form ``test`` (so global test accuracy is the sample-weighted mean of the devices').
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from fraudfl.data.generators.common import FILE_FORMATS, prepare_output_dir, write_dataset
from fraudfl.data.schema import Schema
from fraudfl.errors import FraudflError

log = logging.getLogger(__name__)

LABEL = "y"


def feature_names(n_features: int) -> list[str]:
    width = len(str(n_features - 1))
    return [f"x{j:0{width}d}" for j in range(n_features)]


def device_sizes(rng: np.random.Generator, n_devices: int) -> np.ndarray:
    return rng.lognormal(4, 2, n_devices).astype(np.int64) + 50


def fedprox_schema(n_features: int, n_classes: int) -> Schema:
    return Schema(
        label=LABEL,
        numeric=feature_names(n_features),
        categorical=[],
        drop=[],
        task="multiclass",
        num_classes=n_classes,
    )


def generate_fedprox_synthetic(
    out_dir: Path,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    iid: bool = False,
    n_devices: int = 30,
    n_features: int = 60,
    n_classes: int = 10,
    test_fraction: float = 0.2,
    seed: int = 0,
    file_format: str = "csv",
    overwrite: bool = False,
) -> Path:
    """Write ``device_00 .. device_NN`` files, ``test`` and ``schema.toml``; returns ``out_dir``."""
    if not (alpha >= 0 and beta >= 0):  # also refuses NaN
        raise FraudflError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
    if n_devices < 1 or n_features < 1 or n_classes < 2:
        raise FraudflError("need at least 1 device, 1 feature and 2 classes")
    if not 0.0 <= test_fraction < 1.0:
        raise FraudflError(f"test fraction must be in [0, 1), got {test_fraction}")
    if file_format not in FILE_FORMATS:
        raise FraudflError(f"file format must be one of {list(FILE_FORMATS)}, got {file_format!r}")
    prepare_output_dir(out_dir, overwrite=overwrite)
    rng = np.random.default_rng(seed)
    sizes = device_sizes(rng, n_devices)
    std_x = np.sqrt(np.arange(1, n_features + 1, dtype=np.float64) ** -1.2)
    names = feature_names(n_features)
    if iid:
        w_global = rng.normal(0, 1, (n_features, n_classes))
        b_global = rng.normal(0, 1, n_classes)
    else:
        u = rng.normal(0, alpha, n_devices)
        big_b = rng.normal(0, beta, n_devices)
    banks: dict[str, pd.DataFrame] = {}
    tests: list[pd.DataFrame] = []
    width = max(2, len(str(n_devices - 1)))
    for k in range(n_devices):
        if iid:
            w, b, v = w_global, b_global, np.zeros(n_features)
        else:
            w = rng.normal(u[k], 1, (n_features, n_classes))
            b = rng.normal(u[k], 1, n_classes)
            v = rng.normal(big_b[k], 1, n_features)
        n = int(sizes[k])
        x = v + rng.normal(0, 1, (n, n_features)) * std_x
        y = np.argmax(x @ w + b, axis=1).astype(np.int64)
        frame = pd.DataFrame(x, columns=names)
        frame[LABEL] = y
        n_train = n - round(n * test_fraction)
        # Samples are i.i.d. within a device, so the first n_train rows are a random split.
        banks[f"device_{k:0{width}d}"] = frame.iloc[:n_train].reset_index(drop=True)
        tests.append(frame.iloc[n_train:])
    test = pd.concat(tests, ignore_index=True)
    write_dataset(out_dir, fedprox_schema(n_features, n_classes), banks, test, file_format)
    log.info(
        "wrote Synthetic(%s, %s)%s: %d devices, %d samples to %s",
        alpha,
        beta,
        " IID" if iid else "",
        n_devices,
        int(sizes.sum()),
        out_dir,
    )
    return out_dir
