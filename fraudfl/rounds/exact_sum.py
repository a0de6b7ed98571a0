"""Exact secure sums of real-valued statistics through the fixed-point secure aggregation.

Secure aggregation quantises each coordinate into ``levels = (2^(b-1) - 1) // n`` steps, which
is plenty for model updates but far too coarse for feature statistics, whose counts and sums of
squares span many orders of magnitude. Here each value ``x`` becomes the integer
``X = round(x * 2^frac_bits)``, taken modulo ``M = 2^(limb_bits * limbs)`` and split into
``limbs`` base-``2^limb_bits`` digits with ``2^limb_bits <= levels``. With ``clip = levels`` the
quantiser's scale is exactly 1, every digit is an exactly representable integer, and the sum of
n banks' digits cannot wrap; recombining the digit sums gives ``sum(X_i) mod M`` exactly, which
is the true sum as long as ``|sum(X_i)| < M / 2``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

DEFAULT_LIMBS = 4
DEFAULT_FRAC_BITS = 20


def levels(n: int, bits: int) -> int:
    """The secure-aggregation quantiser's per-bank magnitude for ``n`` banks and ``bits``."""
    return ((1 << (bits - 1)) - 1) // n


def limb_bits(n: int, bits: int) -> int:
    width = levels(n, bits).bit_length() - 1
    if width < 8:
        raise ValueError(f"{bits}-bit secure aggregation of {n} banks leaves too little room")
    return width


def encode(
    values: npt.NDArray[np.float64],
    n: int,
    bits: int,
    frac_bits: int = DEFAULT_FRAC_BITS,
    limbs: int = DEFAULT_LIMBS,
) -> npt.NDArray[np.float64]:
    """``limbs`` digits per value, value-major; each an integer in ``[0, 2^limb_bits)``."""
    width = limb_bits(n, bits)
    modulus = 1 << (width * limbs)
    x = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(x)):
        raise ValueError("cannot encode NaN or infinite statistics")
    # Scaling by a power of two is exact; below 2^62 the fixed-point values fit int64, and the
    # digits of ``fixed mod M`` are those of its two's complement (arithmetic shifts).
    scaled = x * float(1 << frac_bits)
    if len(x) and float(np.max(np.abs(scaled))) >= 2.0**62:
        return _encode_wide(x, n, width, modulus, frac_bits, limbs)
    fixed = np.rint(scaled).astype(np.int64)
    limit = modulus // (2 * n)
    if limit <= np.iinfo(np.int64).max:
        too_large = np.abs(fixed) >= limit
        if np.any(too_large):
            value = x[np.argmax(too_large)]
            raise ValueError(f"statistic {value} too large for {limbs} limbs of {width} bits")
    mask = (1 << width) - 1
    out = np.empty((len(x), limbs), dtype=np.float64)
    for j in range(limbs):
        shift = width * j
        if shift < 64:
            out[:, j] = (fixed >> shift) & mask
        else:
            out[:, j] = np.where(fixed < 0, mask, 0)
    return out.ravel()


def _encode_wide(
    x: npt.NDArray[np.float64], n: int, width: int, modulus: int, frac_bits: int, limbs: int
) -> npt.NDArray[np.float64]:
    """:func:`encode` for values beyond int64 once scaled, with Python's integers."""
    mask = (1 << width) - 1
    out = np.empty(len(x) * limbs, dtype=np.float64)
    for i, value in enumerate(x):
        fixed = round(float(value) * (1 << frac_bits))
        if 2 * abs(fixed) * n >= modulus:
            raise ValueError(f"statistic {value} too large for {limbs} limbs of {width} bits")
        residue = fixed % modulus
        for j in range(limbs):
            out[i * limbs + j] = float((residue >> (width * j)) & mask)
    return out


def decode(
    digit_sums: npt.NDArray[np.float64],
    n: int,
    bits: int,
    frac_bits: int = DEFAULT_FRAC_BITS,
    limbs: int = DEFAULT_LIMBS,
) -> npt.NDArray[np.float64]:
    """The summed values from the summed digits produced by :func:`encode` (at most n banks)."""
    if len(digit_sums) % limbs:
        raise ValueError(f"digit vector length {len(digit_sums)} is not a multiple of {limbs}")
    width = limb_bits(n, bits)
    modulus = 1 << (width * limbs)
    digits = np.rint(np.asarray(digit_sums, dtype=np.float64)).astype(np.int64)
    out = np.empty(len(digits) // limbs, dtype=np.float64)
    for i in range(len(out)):
        total = sum(int(digits[i * limbs + j]) << (width * j) for j in range(limbs)) % modulus
        if total >= modulus // 2:
            total -= modulus
        out[i] = total / (1 << frac_bits)
    return out
