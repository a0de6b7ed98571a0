"""Shamir t-of-n secret sharing over GF(2^521 - 1), used only for 32-byte secrets.

The field is the Mersenne prime 2^521 - 1, comfortably larger than any 256-bit secret, so a
32-byte seed or X25519 private key embeds as one field element. Share x-coordinates are the
participants' 1-based positions in the round's participant list, so a share travels as its
66-byte big-endian y value and everyone knows its x.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

PRIME = (1 << 521) - 1
SHARE_BYTES = 66  # ceil(521 / 8)
SECRET_BYTES = 32


def split(secret: bytes, xs: Sequence[int], threshold: int) -> dict[int, bytes]:
    """Share ``secret`` (32 bytes) at the points ``xs`` so that any ``threshold`` recover it."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"secret must be {SECRET_BYTES} bytes")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold {threshold} must be between 1 and {len(xs)}")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("share points must be distinct and non-zero")
    coeffs = [int.from_bytes(secret, "big")]
    coeffs += [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares: dict[int, bytes] = {}
    for x in xs:
        y = 0
        for c in reversed(coeffs):
            y = (y * x + c) % PRIME
        shares[x] = y.to_bytes(SHARE_BYTES, "big")
    return shares


@lru_cache(maxsize=256)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    # The same shareholder set recurs for many secrets in a round, so the O(t^2) coefficients are
    # computed once per set.
    out = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        out.append(num * pow(den, -1, PRIME) % PRIME)
    return tuple(out)


def combine(shares: Mapping[int, bytes], threshold: int) -> bytes:
    """Recover the 32-byte secret from at least ``threshold`` shares ``{x: y}``.

    Uses the ``threshold`` smallest x; raises ``ValueError`` when there are too few shares or the
    result is not a 32-byte value (which a wrong or tampered share almost surely produces).
    """
    if len(shares) < threshold:
        raise ValueError(f"need {threshold} shares, have {len(shares)}")
    xs = tuple(sorted(shares)[:threshold])
    lam = _lagrange_at_zero(xs)
    value = 0
    for x, coeff in zip(xs, lam, strict=True):
        y = int.from_bytes(shares[x], "big")
        if y >= PRIME:
            raise ValueError("share is not a field element")
        value = (value + coeff * y) % PRIME
    if value >= 1 << (8 * SECRET_BYTES):
        raise ValueError("shares do not interpolate to a 32-byte secret")
    return value.to_bytes(SECRET_BYTES, "big")


def points(indices: Iterable[int]) -> list[int]:
    """Share x-coordinates for 0-based participant indices."""
    return [i + 1 for i in indices]
