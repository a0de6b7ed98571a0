"""Keyed feature hashing: the same buckets in every bank and every process, other keys differ."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fraudfl.data import FeaturePipeline, Schema, compute_stats, sum_stats
from fraudfl.data.hashing import hash_buckets

KEY = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
VALUES = [f"merchant-{i}" for i in range(300)] + ["", "é-ünïcode", None]

_CHILD = """
import json, sys
from fraudfl.data.hashing import hash_buckets
values = json.loads(sys.argv[2])
bucket, sign = hash_buckets(bytes.fromhex(sys.argv[1]), "merchant_id", values, 64)
print(json.dumps([bucket.tolist(), sign.tolist()]))
"""


def test_same_buckets_in_another_process() -> None:
    bucket, sign = hash_buckets(KEY, "merchant_id", VALUES, 64)
    # A different hash seed makes Python's own hash() differ between the processes.
    env = {**os.environ, "PYTHONHASHSEED": "12345",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, KEY.hex(), json.dumps(VALUES)],
        capture_output=True, text=True, check=True, env=env,
    )
    child_bucket, child_sign = json.loads(out.stdout)
    assert child_bucket == bucket.tolist() and child_sign == sign.tolist()


def test_buckets_signs_and_missing() -> None:
    bucket, sign = hash_buckets(KEY, "merchant_id", VALUES, 64)
    assert bucket[-1] == -1 and sign[-1] == 0.0  # missing: no bucket
    assert ((bucket[:-1] >= 0) & (bucket[:-1] < 64)).all()
    assert set(sign[:-1].tolist()) == {-1.0, 1.0}
    # 300 values over 64 buckets: all buckets used, none hoarding.
    assert len(set(bucket[:300].tolist())) > 55


def test_key_and_column_change_the_buckets() -> None:
    a, _ = hash_buckets(KEY, "merchant_id", VALUES[:300], 1 << 20)
    b, _ = hash_buckets(bytes(16), "merchant_id", VALUES[:300], 1 << 20)
    c, _ = hash_buckets(KEY, "device_id", VALUES[:300], 1 << 20)
    assert (a != b).mean() > 0.99 and (a != c).mean() > 0.99


def test_every_bank_encodes_a_value_alike() -> None:
    schema = Schema(label="y", numeric=["x"], categorical=["merchant"],
                    hashed={"merchant": 32}, hash_key=KEY.hex())
    bank_a = pd.DataFrame({"x": [1.0, 2.0], "merchant": ["shop-1", "shop-2"], "y": [0, 1]})
    bank_b = pd.DataFrame({"x": [3.0, 4.0, 5.0], "merchant": ["shop-9", "shop-2", None],
                           "y": [0, 0, 1]})
    pipeline = FeaturePipeline.fit(sum_stats(compute_stats(f, schema) for f in (bank_a, bank_b)))
    assert pipeline.num_features == 1 + 32 + 1  # x, buckets, merchant:missing
    xa, xb = pipeline.transform_features(bank_a), pipeline.transform_features(bank_b)
    np.testing.assert_array_equal(xa[1, 1:], xb[1, 1:])  # "shop-2" in either bank
    assert np.abs(xa[:, 1:33]).sum(axis=1).tolist() == [1.0, 1.0]
    assert xb[2, 1:33].tolist() == [0.0] * 32 and xb[2, 33] == 1.0
    # The statistics hold no per-value counts of a hashed column: nothing reveals a bank's ids.
    assert "merchant" not in compute_stats(bank_b, schema).category_counts
