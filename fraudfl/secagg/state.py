"""JSON-compatible forms of protocol values, for checkpoints (never pickle)."""

from __future__ import annotations

from typing import Any

from fraudfl.secagg.auth import b64, unb64
from fraudfl.secagg.params import RoundParams


def params_to_dict(p: RoundParams) -> dict[str, Any]:
    return {
        "participants": list(p.participants),
        "threshold": p.threshold,
        "neighbours": p.neighbours,
        "vector_length": p.vector_length,
        "weighted": p.weighted,
        "bits": p.bits,
        "clip": p.clip,
        "weight_max": p.weight_max,
        "graph_seed": b64(p.graph_seed),
    }


def params_from_dict(d: dict[str, Any]) -> RoundParams:
    params = RoundParams(
        participants=tuple(str(x) for x in d["participants"]),
        threshold=int(d["threshold"]),
        neighbours=int(d["neighbours"]),
        vector_length=int(d["vector_length"]),
        weighted=bool(d["weighted"]),
        bits=int(d["bits"]),
        clip=float(d["clip"]),
        weight_max=float(d["weight_max"]),
        graph_seed=unb64(d["graph_seed"]),
    )
    params.validate()
    return params
