"""Fixed-point encoding of float updates into Z_{2^b} so that sums of up to n banks never wrap.

Each coordinate is clipped to ``[-clip, clip]`` and scaled by ``scale = L / clip`` where
``L = floor((2^(b-1) - 1) / n)``: a sum of n encoded values then lies in ``[-(2^(b-1)-1),
2^(b-1)-1]`` and decodes unambiguously as a two's-complement b-bit integer. Precision shrinks
with n instead of b growing, which keeps the masked upload at b/32 times the float32 size.

Weighted averaging appends the weight as one extra coordinate with its own range
``[0, weight_max]``; the banks send ``weight * update`` in the other coordinates, so the server
decodes only the two sums it needs.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

SUPPORTED_BITS: dict[int, type[np.unsignedinteger[Any]]] = {16: np.uint16, 32: np.uint32}

FloatArray = npt.NDArray[np.floating]
UIntArray = npt.NDArray[np.unsignedinteger]


class Rounding(StrEnum):
    NEAREST = "nearest"
    STOCHASTIC = "stochastic"


@dataclass(frozen=True)
class Quantizer:
    """Encoder/decoder for one round: ``bits`` per coordinate, at most ``max_summands`` banks."""

    clip: float
    bits: int
    max_summands: int
    weight_max: float = 1.0
    rounding: Rounding = Rounding.NEAREST

    def __post_init__(self) -> None:
        if self.bits not in SUPPORTED_BITS:
            raise ValueError(f"bits must be one of {sorted(SUPPORTED_BITS)}, got {self.bits}")
        if not (self.clip > 0 and np.isfinite(self.clip)):
            raise ValueError(f"clip must be a positive finite number, got {self.clip}")
        if not (self.weight_max > 0 and np.isfinite(self.weight_max)):
            raise ValueError(f"weight_max must be positive and finite, got {self.weight_max}")
        if self.max_summands < 1 or self.levels < 1:
            raise ValueError(
                f"{self.max_summands} summands leave no precision in {self.bits} bits"
            )

    @property
    def dtype(self) -> type[np.unsignedinteger[Any]]:
        return SUPPORTED_BITS[self.bits]

    @property
    def levels(self) -> int:
        """Largest quantised magnitude one bank may contribute per coordinate."""
        return ((1 << (self.bits - 1)) - 1) // self.max_summands

    @property
    def scale(self) -> float:
        return self.levels / self.clip

    @property
    def weight_scale(self) -> float:
        return self.levels / self.weight_max

    def error_bound(self, summands: int | None = None) -> float:
        """Worst-case |decoded sum - sum of clipped inputs| per update coordinate."""
        per_bank = 0.5 if self.rounding is Rounding.NEAREST else 1.0
        return (summands or self.max_summands) * per_bank / self.scale

    def weight_error_bound(self, summands: int | None = None) -> float:
        per_bank = 0.5 if self.rounding is Rounding.NEAREST else 1.0
        return (summands or self.max_summands) * per_bank / self.weight_scale

    def encode(self, values: FloatArray) -> UIntArray:
        """Clip, scale and round ``values`` into b-bit two's-complement integers."""
        return self._to_ring(self._quantise(np.asarray(values, np.float64), self.clip, self.scale))

    def encode_weighted(self, update: FloatArray, weight: float) -> UIntArray:
        """``[weight * update, weight]`` encoded; ``weight`` must be in ``[0, weight_max]``."""
        if not 0.0 <= weight <= self.weight_max:
            raise ValueError(f"weight {weight} outside [0, {self.weight_max}]")
        body = self._quantise(np.asarray(update, np.float64) * weight, self.clip, self.scale)
        w = self._quantise(np.array([weight]), self.weight_max, self.weight_scale)
        return self._to_ring(np.concatenate([body, w]))

    def decode(self, total: UIntArray) -> npt.NDArray[np.float64]:
        """The float sum encoded by a ring sum of at most ``max_summands`` encodings."""
        return self._signed(total) / self.scale

    def decode_weighted(self, total: UIntArray) -> tuple[npt.NDArray[np.float64], float]:
        signed = self._signed(total)
        return signed[:-1] / self.scale, float(signed[-1] / self.weight_scale)

    def _quantise(
        self, values: npt.NDArray[np.float64], bound: float, scale: float
    ) -> npt.NDArray[np.int64]:
        if not np.all(np.isfinite(values)):
            raise ValueError("cannot quantise NaN or infinite values")
        scaled = np.clip(values, -bound, bound) * scale
        if self.rounding is Rounding.NEAREST:
            rounded = np.rint(scaled)
        else:
            rng = np.random.default_rng(secrets.randbits(128))
            rounded = np.floor(scaled + rng.random(scaled.shape))
        return np.clip(rounded, -self.levels, self.levels).astype(np.int64)

    def _to_ring(self, values: npt.NDArray[np.int64]) -> UIntArray:
        # Two's complement: the low b bits of the int64 are the residue mod 2^b.
        return (values & ((1 << self.bits) - 1)).astype(self.dtype)

    def _signed(self, total: UIntArray) -> npt.NDArray[np.float64]:
        wide = np.asarray(total).astype(np.int64)
        wide[wide >= 1 << (self.bits - 1)] -= 1 << self.bits
        return wide.astype(np.float64)
