"""Public parameters of one secure-aggregation round, announced by the server in stage 0."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from fraudfl.secagg.graph import FULL_GRAPH, effective_degree, neighbours
from fraudfl.secagg.quantize import SUPPORTED_BITS, Quantizer, Rounding
from fraudfl.vocabulary import valid_id

MAX_PARTICIPANTS = 4096
MAX_VECTOR_LENGTH = 1 << 28
def valid_participant_id(participant_id: str) -> bool:
    return valid_id(participant_id)


@dataclass(frozen=True)
class RoundParams:
    """Everything every party must agree on before keys are exchanged.

    ``participants`` is sorted; a bank's index in it orders the pairwise masks and (plus one) is
    the x-coordinate of the Shamir shares it holds. ``threshold`` is both the Shamir threshold
    within each bank's group (itself and its neighbours) and the minimum number of banks that
    must answer every stage. ``neighbours`` is the SecAgg+ degree k, 0 for the full graph.
    """

    participants: tuple[str, ...]
    threshold: int
    neighbours: int
    vector_length: int
    weighted: bool
    bits: int
    clip: float
    weight_max: float
    graph_seed: bytes
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {p: i for i, p in enumerate(self.participants)})

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent field."""
        n = len(self.participants)
        if not 2 <= n <= MAX_PARTICIPANTS:
            raise ValueError(f"participants: need 2..{MAX_PARTICIPANTS}, got {n}")
        if list(self.participants) != sorted(set(self.participants)):
            raise ValueError("participants: must be sorted and unique")
        bad = [p for p in self.participants if not valid_participant_id(p)]
        if bad:
            raise ValueError(f"participants: invalid id {bad[0]!r}")
        if self.neighbours < 0:
            raise ValueError("neighbours: must be >= 0 (0 = full graph)")
        if not 1 <= self.threshold <= self.group_size:
            raise ValueError(
                f"threshold: {self.threshold} must be between 1 and the group size "
                f"{self.group_size}"
            )
        if not 1 <= self.vector_length <= MAX_VECTOR_LENGTH:
            raise ValueError(f"vector_length: must be 1..{MAX_VECTOR_LENGTH}")
        if self.bits not in SUPPORTED_BITS:
            raise ValueError(f"bits: must be one of {sorted(SUPPORTED_BITS)}")
        if len(self.graph_seed) != 32:
            raise ValueError("graph_seed: must be 32 bytes")
        self.quantizer()  # checks clip, weight_max and precision

    @property
    def n(self) -> int:
        return len(self.participants)

    @property
    def masked_length(self) -> int:
        """Coordinates in each masked vector: the update plus the weight when weighted."""
        return self.vector_length + int(self.weighted)

    @property
    def full_graph(self) -> bool:
        return effective_degree(self.n, self.neighbours) == FULL_GRAPH

    @property
    def group_size(self) -> int:
        """The size of every bank's group, computed without building the graph: validation runs
        on a decoded setup before its signature is checked, and the full graph of 4096 banks
        takes seconds and over a gigabyte to materialise."""
        return self.n if self.full_graph else effective_degree(self.n, self.neighbours) + 1

    def index(self, participant_id: str) -> int | None:
        return self._index.get(participant_id)

    @cached_property
    def neighbour_sets(self) -> list[frozenset[int]]:
        return neighbours(self.n, self.neighbours, self.graph_seed)

    @cached_property
    def groups(self) -> list[frozenset[int]]:
        """Each bank's share-holders: its neighbours and itself."""
        return [nb | {i} for i, nb in enumerate(self.neighbour_sets)]

    def prune(self, members: set[int]) -> set[int]:
        """Drop banks with fewer than t group members left, until none remain (SecAgg+).

        Such a bank's secrets could never be reconstructed, so it is treated as having dropped
        now rather than failing the whole round later. With the full graph this never fires
        while t banks remain. Server and banks apply it alike once the graph is fixed.
        """
        t, groups = self.threshold, self.groups
        while True:
            starved = {u for u in members if len(groups[u] & members) < t}
            if not starved:
                return members
            members = members - starved

    def quantizer(self, rounding: Rounding = Rounding.NEAREST) -> Quantizer:
        return Quantizer(
            clip=self.clip, bits=self.bits, max_summands=self.n, weight_max=self.weight_max,
            rounding=rounding,
        )
