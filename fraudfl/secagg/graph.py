"""The neighbour graph: who masks with and shares secrets with whom.

SecAgg (Bonawitz et al.) uses the complete graph. SecAgg+ (Bell et al.) uses a sparse k-regular
graph; here it is a ring in which every node is joined to its k/2 nearest nodes on each side,
with the ring order a pseudorandom permutation of the participants. The permutation comes from a
public seed hashed from (federation, round, participant list), so every party derives the same
graph and the server cannot grind a graph that isolates a bank.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

FULL_GRAPH = 0


def graph_seed(federation_id: str, round_number: int, participants: Sequence[str]) -> bytes:
    h = hashlib.sha256(b"fraudfl-secagg/v1/graph")
    for part in (federation_id, *participants):
        raw = part.encode()
        h.update(struct.pack(">H", len(raw)) + raw)
    h.update(struct.pack(">Q", round_number))
    return h.digest()


def effective_degree(n: int, k: int) -> int:
    """The degree actually used: k rounded up to even, or the full graph when k >= n - 1."""
    if k == FULL_GRAPH or k >= n - 1:
        return FULL_GRAPH
    return k + (k % 2)


def neighbours(n: int, k: int, seed: bytes) -> list[frozenset[int]]:
    """For each participant index, the set of its neighbours (excluding itself)."""
    degree = effective_degree(n, k)
    if degree == FULL_GRAPH or degree >= n - 1:
        everyone = frozenset(range(n))
        return [everyone - {i} for i in range(n)]
    order = sorted(range(n), key=lambda i: hashlib.sha256(seed + struct.pack(">I", i)).digest())
    position = {node: pos for pos, node in enumerate(order)}
    half = degree // 2
    return [
        frozenset(
            order[(position[i] + step) % n]
            for offset in range(1, half + 1)
            for step in (offset, -offset)
        )
        for i in range(n)
    ]
