"""Control-plane payloads of a round, and their one strict codec.

Each payload is ``magic "FFRM" | version u8 | kind u8 | header length u32 | header JSON | blob``:
a small JSON header validated by a pydantic model (unknown keys rejected) plus an optional raw
blob (a secure-aggregation setup message, a float32 parameter vector). They travel as the payload
of signed transport envelopes; the envelope's ``payload_type`` repeats the kind.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fraudfl import boundedjson
from fraudfl.errors import FraudflError
from fraudfl.trees.ensemble import TreeEnsemble
from fraudfl.vocabulary import DeclineReason, RoundKind

MAGIC = b"FFRM"
VERSION = 1
_HEAD = struct.Struct(">4sBBI")
MAX_HEADER_BYTES = 1 << 20
# The deepest real header (a model's pipeline) nests a handful of levels.
MAX_HEADER_DEPTH = 16

ANNOUNCE = "round.announce"
DECLINE = "round.decline"
MODEL = "model"
SECAGG = "secagg"


class ControlMessageError(ValueError):
    """A control payload failed to decode or validate."""


class _Header(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    KIND: ClassVar[int]


class TrainInstructions(_Header):
    """Local training a bank is asked to do this round (from the strategy's configure_round)."""

    local_epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    mu: float = Field(ge=0)
    # At most this many optimiser steps per round (None: whole epochs).
    max_steps: int | None = Field(default=None, ge=1)
    # Class-imbalance options of the loss (fraudfl.training.local.TrainConfig).
    pos_weight: float | None = Field(default=None, gt=0)
    focal_gamma: float | None = Field(default=None, ge=0)
    accept_partial_work: bool = False


class BankDPInstructions(_Header):
    """Bank-level DP: clip the update to ``clip_norm`` and add this bank's share of noise."""

    enabled: bool = False
    clip_norm: float = Field(default=1.0, gt=0)
    noise_multiplier: float = Field(default=1.0, gt=0)
    expected_banks: int = Field(default=1, ge=1)
    total_banks: int = Field(default=1, ge=1)


# One split of a growing tree: (tree, heap node, feature, split bin, missing goes left).
Split = tuple[int, int, int, int, bool]


class TreeInstructions(_Header):
    """One step of a boosting job: what a bank needs to recompute its vector.

    ``params`` are the job's :class:`~fraudfl.trees.GBDTParams` fields; the ensemble the
    gradients start from is the announcement's model version; ``splits`` are the splits chosen
    so far in round ``boosting_round``'s growing trees and ``features`` its column sample.
    """

    step: Literal["bins", "labels", "level", "leaves"]
    params: dict[str, Any]
    clip: float = Field(gt=0)
    boosting_round: int = Field(default=0, ge=0)
    depth: int = Field(default=0, ge=0)
    splits: tuple[Split, ...] = ()
    features: tuple[int, ...] = ()


class Announcement(_Header):
    """Aggregator to every bank: a round starts. The blob is the secagg setup message.

    ``kind="stats"`` asks for the bank's feature statistics (round 0); ``kind="train"`` for a
    weighted model update relative to the global model ``model_version``.
    """

    KIND: ClassVar[int] = 1
    round: int = Field(ge=0)
    kind: RoundKind
    participants: tuple[str, ...]
    # False: the round sums in the clear (fraudfl.secagg.plain); banks refuse it unless their
    # own settings allow it.
    secure: bool = True
    model_version: int | None = None
    model_sha256: str | None = None
    train: TrainInstructions | None = None
    bank_dp: BankDPInstructions | None = None
    # Banks send weight = min(1, examples / weight_scale) next to weight * update.
    weight_scale: float = Field(default=1.0, gt=0)
    planned_rounds: int = Field(default=1, ge=1)
    # Stats rounds: fixed-point settings of the exact integer sum (see exact_sum).
    stats_frac_bits: int | None = None
    # FedPer: the last k linear layers are personal; banks send the body's update only.
    personal_layers: int = Field(default=0, ge=0)
    # Tree rounds ("tree_bins", "tree"): the boosting step.
    tree: TreeInstructions | None = None



class Decline(_Header):
    """Bank to aggregator: it will not take part in ``round`` (so nobody waits for it)."""

    KIND: ClassVar[int] = 2
    round: int = Field(ge=0)
    reason: DeclineReason
    # A policy refusal's rule name (fraudfl.rounds.policy.Refusal); empty otherwise.
    detail: str = Field(default="", max_length=64)


class ModelInfo(_Header):
    """A versioned global model; the blob is the float32 parameter vector (little-endian), or
    for ``kind="gbdt"`` the ensemble's float64 node array (``TreeEnsemble.node_array``, its
    metadata in ``trees``; ``spec`` holds the job's parameters).

    Version 0 is the initial model, published with the feature pipeline fitted from the summed
    statistics (for trees: no ensemble yet, the bins are not known); version v > 0 is the
    model produced by round v.
    """

    KIND: ClassVar[int] = 3
    version: int = Field(ge=0)
    round: int = Field(ge=0)
    spec: dict[str, Any]
    pipeline: dict[str, Any]
    num_params: int = Field(ge=0)
    sha256: str
    participants: tuple[str, ...] = ()
    dropouts: tuple[str, ...] = ()
    declined: tuple[str, ...] = ()
    federation_epsilon: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    created_ms: int = 0
    # FedPer: only the body was aggregated; the last k linear layers (the head) are the
    # initial ones, each bank trains and keeps its own.
    personal_layers: int = Field(default=0, ge=0)
    kind: Literal["neural", "gbdt"] = "neural"
    trees: dict[str, Any] | None = None


H = TypeVar("H", bound=_Header)


def params_digest(params: npt.NDArray[np.float32]) -> str:
    return hashlib.sha256(np.ascontiguousarray(params, dtype="<f4").tobytes()).hexdigest()


def encode(header: _Header, blob: bytes = b"") -> bytes:
    head = header.model_dump_json().encode()
    return _HEAD.pack(MAGIC, VERSION, header.KIND, len(head)) + head + blob


def decode(data: bytes, cls: type[H]) -> tuple[H, bytes]:
    """Parse ``data`` as a ``cls`` payload; raise :class:`ControlMessageError` on any defect."""
    if len(data) < _HEAD.size:
        raise ControlMessageError("control payload truncated")
    magic, version, kind, head_len = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise ControlMessageError("not a control payload (bad magic)")
    if version != VERSION:
        raise ControlMessageError(f"control payload version {version} is not supported")
    if kind != cls.KIND:
        raise ControlMessageError(f"expected a {cls.__name__} payload, got kind {kind}")
    if head_len > MAX_HEADER_BYTES or _HEAD.size + head_len > len(data):
        raise ControlMessageError("control header length out of range")
    raw = data[_HEAD.size : _HEAD.size + head_len]
    try:
        header = cls.model_validate(
            boundedjson.loads(raw, max_bytes=MAX_HEADER_BYTES, max_depth=MAX_HEADER_DEPTH)
        )
    except (ValueError, ValidationError, RecursionError) as exc:
        raise ControlMessageError(f"invalid {cls.__name__}: {exc}".splitlines()[0]) from exc
    return header, bytes(data[_HEAD.size + head_len :])


def tree_digest(nodes: npt.NDArray[np.float64]) -> str:
    return hashlib.sha256(np.ascontiguousarray(nodes, dtype="<f8").tobytes()).hexdigest()


def encode_model(info: ModelInfo, params: npt.NDArray[np.float32]) -> bytes:
    return encode(info, np.ascontiguousarray(params, dtype="<f4").tobytes())


def encode_tree_model(info: ModelInfo, ensemble: TreeEnsemble | None) -> bytes:
    blob = b"" if ensemble is None else np.ascontiguousarray(
        ensemble.node_array(), dtype="<f8").tobytes()
    return encode(info, blob)


def decode_tree_model(data: bytes) -> tuple[ModelInfo, TreeEnsemble | None]:
    """A published tree model (None before the job's bins are known), strictly checked."""
    info, blob = decode(data, ModelInfo)
    if info.kind != "gbdt":
        raise ControlMessageError(f"model v{info.version} is not a tree model")
    if len(blob) != 8 * info.num_params:
        raise ControlMessageError(
            f"model v{info.version}: {len(blob)} bytes for {info.num_params} node values"
        )
    nodes = np.frombuffer(blob, dtype="<f8").astype(np.float64)
    if tree_digest(nodes) != info.sha256:
        raise ControlMessageError(f"model v{info.version}: node digest mismatch")
    if info.trees is None:
        if info.num_params:
            raise ControlMessageError(f"model v{info.version}: nodes without tree metadata")
        return info, None
    n_trees, max_depth = info.trees.get("n_trees"), info.trees.get("max_depth")
    if not isinstance(n_trees, int) or not isinstance(max_depth, int) or not 1 <= max_depth <= 16:
        raise ControlMessageError(f"model v{info.version}: invalid tree metadata")
    try:
        ensemble = TreeEnsemble.from_parts(
            info.trees, nodes.reshape(n_trees, (1 << (max_depth + 1)) - 1, 4),
            source=f"model v{info.version}",
        )
    except (FraudflError, ValueError) as exc:
        raise ControlMessageError(str(exc)) from exc
    return info, ensemble


def decode_model(data: bytes) -> tuple[ModelInfo, npt.NDArray[np.float32]]:
    """A published model; checks the vector's length and digest against its header.

    A tree model (``kind="gbdt"``) is checked by :func:`decode_tree_model` and comes with an
    empty parameter vector: its ensemble is read with that function."""
    info, blob = decode(data, ModelInfo)
    if info.kind == "gbdt":
        decode_tree_model(data)
        return info, np.zeros(0, dtype=np.float32)
    if len(blob) != 4 * info.num_params:
        raise ControlMessageError(
            f"model v{info.version}: {len(blob)} bytes for {info.num_params} parameters"
        )
    params = np.frombuffer(blob, dtype="<f4").astype(np.float32)
    if params_digest(params) != info.sha256:
        raise ControlMessageError(f"model v{info.version}: parameter digest mismatch")
    if not np.all(np.isfinite(params)):
        raise ControlMessageError(f"model v{info.version}: non-finite parameters")
    return info, params
