"""Fixed-point encoding: clipping, no wrap-around for n banks, and the stated error bound."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudfl.secagg import Quantizer, Rounding, SecureSumConfig, secure_sum, secure_weighted_sum


def _ring_sum(q: Quantizer, encoded: list[np.ndarray]) -> np.ndarray:
    total = np.sum([e.astype(np.uint64) for e in encoded], axis=0)
    return (total % (1 << q.bits)).astype(q.dtype)


@pytest.mark.parametrize("rounding", list(Rounding))
@pytest.mark.parametrize("bits", [16, 32])
def test_error_within_bound(rounding: Rounding, bits: int) -> None:
    n, rng = 20, np.random.default_rng(3)
    q = Quantizer(clip=0.5, bits=bits, max_summands=n, rounding=rounding)
    xs = [rng.uniform(-0.7, 0.7, 5000) for _ in range(n)]
    decoded = q.decode(_ring_sum(q, [q.encode(x) for x in xs]))
    clipped = np.sum([np.clip(x, -0.5, 0.5) for x in xs], axis=0)
    err = np.max(np.abs(decoded - clipped))
    assert err <= q.error_bound()
    # The bound is not vacuous: the observed error is a sizeable fraction of it.
    assert err > 0.05 * q.error_bound()


def test_extremes_do_not_wrap() -> None:
    for n in (1, 2, 7, 50, 1000):
        q = Quantizer(clip=1.0, bits=32, max_summands=n)
        for sign in (1.0, -1.0):
            total = _ring_sum(q, [q.encode(np.full(3, sign * 5.0))] * n)
            np.testing.assert_allclose(q.decode(total), sign * n, atol=q.error_bound(n))


def test_weighted_encoding() -> None:
    q = Quantizer(clip=2.0, bits=32, max_summands=3, weight_max=100.0)
    ups = [np.array([0.01, -0.02]), np.array([0.005, 0.0]), np.array([-0.01, 0.01])]
    ws = [10.0, 50.0, 100.0]
    total = _ring_sum(q, [q.encode_weighted(u, w) for u, w in zip(ups, ws, strict=True)])
    s, w = q.decode_weighted(total)
    np.testing.assert_allclose(s, sum(w_ * u for u, w_ in zip(ups, ws, strict=True)),
                               atol=q.error_bound())
    assert abs(w - 160.0) <= q.weight_error_bound()
    with pytest.raises(ValueError, match="outside"):
        q.encode_weighted(ups[0], 101.0)


def test_stochastic_rounding_is_unbiased() -> None:
    q = Quantizer(clip=1.0, bits=16, max_summands=1, rounding=Rounding.STOCHASTIC)
    x = np.full(200_000, 0.3 / q.scale)  # 0.3 of one quantisation step
    assert abs(np.mean(q.decode(q.encode(x))) - x[0]) < 0.01 / q.scale


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError, match="bits"):
        Quantizer(clip=1.0, bits=24, max_summands=2)
    with pytest.raises(ValueError, match="clip"):
        Quantizer(clip=0.0, bits=32, max_summands=2)
    with pytest.raises(ValueError, match="precision"):
        Quantizer(clip=1.0, bits=16, max_summands=40_000)
    with pytest.raises(ValueError, match="NaN"):
        Quantizer(clip=1.0, bits=32, max_summands=2).encode(np.array([np.nan]))


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 200),
    clip=st.floats(1e-3, 1e3),
    values=st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=1, max_size=8),
)
def test_bound_holds_for_any_n_and_clip(n: int, clip: float, values: list[float]) -> None:
    q = Quantizer(clip=clip, bits=32, max_summands=n)
    x = np.array(values)
    decoded = q.decode(_ring_sum(q, [q.encode(x)] * n))
    assert np.all(np.abs(decoded - n * np.clip(x, -clip, clip)) <= q.error_bound() * (1 + 1e-9))


def test_secure_sum_helpers_match_plain_sums() -> None:
    rng = np.random.default_rng(0)
    xs = [rng.uniform(-1, 1, 100).astype(np.float32) for _ in range(6)]
    cfg = SecureSumConfig(clip=1.0)
    out = secure_sum(xs, cfg)
    assert np.max(np.abs(out - np.sum(xs, axis=0, dtype=np.float64))) <= cfg.quantizer(
        6
    ).error_bound()
    ws = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    cfg = SecureSumConfig(clip=10.0, weight_max=10.0, neighbours=2)
    total, wsum = secure_weighted_sum(xs, ws, cfg)
    expect = np.sum([w * x.astype(np.float64) for w, x in zip(ws, xs, strict=True)], axis=0)
    assert np.max(np.abs(total - expect)) <= cfg.quantizer(6).error_bound()
    assert abs(wsum - 21.0) <= cfg.quantizer(6).weight_error_bound()
