"""The neighbour graph: who masks with and shares secrets with whom.

SecAgg (Bonawitz et al.) uses the complete graph. SecAgg+ (Bell et al.) uses a sparse k-regular
graph; here it is a ring in which every node is joined to its k/2 nearest nodes on each side,
with the ring order a pseudorandom permutation of the participants.

The permutation's seed is not the server's to choose. The setup carries a base seed hashed from
(federation, round, participant list); banks accept only the next round number, so the server
cannot grind it by trying rounds. For SecAgg+ the graph seed is then mixed with a nonce from
every bank that advertised keys (:func:`mixed_seed`), committed to with its keys
(:func:`commitment`) and revealed only once every commitment is fixed: neither the server, which
sees the roster first, nor banks colluding with it can steer which banks neighbour a victim.
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


def commitment(nonce: bytes) -> bytes:
    """A bank's binding, hiding commitment to its 32-byte graph nonce."""
    return hashlib.sha256(b"fraudfl-secagg/v1/graph-nonce" + nonce).digest()


def mixed_seed(base_seed: bytes, nonces: dict[int, bytes]) -> bytes:
    """The SecAgg+ graph seed: the base seed and every revealed nonce, by participant index."""
    h = hashlib.sha256(b"fraudfl-secagg/v1/graph-mix" + base_seed)
    for index in sorted(nonces):
        h.update(struct.pack(">H", index) + nonces[index])
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
