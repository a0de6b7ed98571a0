"""Keyed feature hashing of high-cardinality categorical columns.

A value ``v`` of column ``c`` goes to bucket ``h mod buckets`` with sign ``+1`` or ``-1`` taken
from one more bit of ``h = BLAKE2b-64(key, c || 0x00 || v)``. The key is the federation's
``hash_key`` (in ``schema.toml``), so every bank and every process maps a value to the same
bucket, while an outsider who does not know the key cannot pick values that collide with a given
merchant's bucket. Signed hashing keeps the expected inner product of two hashed vectors
unbiased (Weinberger et al., 2009). No vocabulary is shared: a bank's rare values never leave it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

_PERSON = b"fraudfl-fhash-v1"  # BLAKE2b personalisation: this use of the key only


def hash_value(key: bytes, column: str, value: str) -> int:
    """The 64-bit keyed hash of one value of one column."""
    digest = hashlib.blake2b(
        column.encode() + b"\x00" + value.encode(), digest_size=8, key=key, person=_PERSON
    ).digest()
    return int.from_bytes(digest, "little")


def hash_buckets(
    key: bytes, column: str, values: Sequence[str | None], buckets: int
) -> tuple[IntArray, FloatArray]:
    """Bucket (``-1`` for a missing value) and sign of every value.

    Each distinct value is hashed once, so a column of many rows and few values is cheap.
    """
    codes: dict[str | None, tuple[int, float]] = {None: (-1, 0.0)}
    bucket = np.empty(len(values), dtype=np.int64)
    sign = np.empty(len(values), dtype=np.float64)
    for i, value in enumerate(values):
        found = codes.get(value)
        if found is None:
            h = hash_value(key, column, str(value))
            # The low bits choose the bucket, the top bit the sign (independent for any
            # bucket count below 2^63).
            found = (h % buckets, 1.0 if h >> 63 else -1.0)
            codes[value] = found
        bucket[i], sign[i] = found
    return bucket, sign
