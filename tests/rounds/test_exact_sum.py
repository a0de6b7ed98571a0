from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudfl.rounds import exact_sum
from fraudfl.secagg.quantize import Quantizer


def _through_quantizer(digits: list[np.ndarray], n: int, bits: int) -> np.ndarray:
    lv = exact_sum.levels(n, bits)
    q = Quantizer(clip=float(lv), bits=bits, max_summands=n)
    total = sum(q.encode(d).astype(np.uint64) for d in digits)
    ring = (np.asarray(total) % (1 << bits)).astype(q.dtype)
    return q.decode(ring)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 30),
    data=st.data(),
)
def test_sum_is_exact_through_secagg_quantiser(n: int, data: st.DataObject) -> None:
    d = data.draw(st.integers(1, 5))
    values = [
        np.array(data.draw(st.lists(
            st.floats(-1e9, 1e9, allow_nan=False), min_size=d, max_size=d
        )))
        for _ in range(n)
    ]
    digits = [exact_sum.encode(v, n, 32) for v in values]
    decoded = exact_sum.decode(_through_quantizer(digits, n, 32), n, 32)
    # The reference in Python integers: a float64 sum of the fixed-point values would itself
    # round once the total exceeds 2^53 units of 2^-20.
    fixed = [[round(float(x) * 2**20) for x in v] for v in values]
    expected = [sum(column) / 2**20 for column in zip(*fixed, strict=True)]
    np.testing.assert_array_equal(decoded, expected)


def test_counts_and_large_sums_of_squares() -> None:
    stats = [np.array([12_345.0, 3.0e12, -4.5]), np.array([1.0, 7.5e11, 0.25])]
    digits = [exact_sum.encode(v, 2, 32) for v in stats]
    out = exact_sum.decode(_through_quantizer(digits, 2, 32), 2, 32)
    assert out[0] == 12_346.0
    assert out[1] == 3.75e12
    assert out[2] == -4.25


def test_vectorised_encoding_equals_the_integer_one() -> None:
    """The int64 fast path gives the digits of Python's exact integer arithmetic."""
    from fraudfl.rounds.exact_sum import _encode_wide, limb_bits

    rng = np.random.default_rng(5)
    values = np.concatenate([
        rng.normal(0, 1, 200), rng.normal(0, 1e9, 200), -rng.exponential(1e6, 100),
        [0.0, -0.0, 2.0**-21, -(2.0**-21), 0.5 / 2**20, 1.5 / 2**20, 2.0**41, -(2.0**41)],
    ])
    for n, bits in ((3, 32), (50, 32), (1000, 32)):
        width = limb_bits(n, bits)
        expected = _encode_wide(values, n, width, 1 << (width * 4), 20, 4)
        np.testing.assert_array_equal(exact_sum.encode(values, n, bits), expected)
