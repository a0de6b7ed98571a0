"""The consortium's secure-aggregation policy, held and enforced by every bank.

Whether "the aggregator learns only the sum" holds is decided by round parameters the aggregator
announces: who takes part, the threshold, the neighbour graph, the task and its parameters. A
bank therefore checks every announcement against this policy before it touches data or charges
privacy, and declines a round outside it with a typed, logged and counted reason.

The policy is one TOML file agreed by the consortium. Each bank pins its SHA-256 in its own
configuration (``policy_sha256``) and refuses to start when the file differs, so no single party
(the aggregator least of all) can loosen it. The file may require signatures: a sidecar
``<file>.sig.json`` ``{"signatures": {bank_id: ed25519_signature_hex}}`` over
``SIGNING_CONTEXT + file bytes`` by enrolled banks (``fraudfl policy sign``), at least
``signatures_required`` of them distinct and valid. Since the requirement is inside the pinned
file, it cannot be lowered either.

:func:`check_announcement` is pure: the announcement, its secure-aggregation parameters, the
allowlist and the bank's own history in; a :class:`PolicyRefusal` or None out.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fraudfl.errors import FraudflError
from fraudfl.identity import Allowlist, Identity, verify
from fraudfl.rounds.messages import Announcement, encode
from fraudfl.secagg.graph import FULL_GRAPH, effective_degree
from fraudfl.secagg.params import RoundParams

SIGNING_CONTEXT = b"fraudfl.consortium-policy.v1\x00"
VIEW_CONTEXT = b"fraudfl.round-view.v1\x00"
SIGNATURES_SUFFIX = ".sig.json"
DAY_S = 86_400.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _ordered(bounds: tuple[float, float], name: str) -> None:
    if not bounds[0] <= bounds[1]:
        raise ValueError(f"{name}: lower bound {bounds[0]} exceeds upper bound {bounds[1]}")


PositiveRange = tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]]
RateRange = tuple[Annotated[float, Field(gt=0, allow_inf_nan=False)],
                  Annotated[float, Field(gt=0, allow_inf_nan=False)]]
MuRange = tuple[Annotated[float, Field(ge=0, allow_inf_nan=False)],
                Annotated[float, Field(ge=0, allow_inf_nan=False)]]


class TrainBounds(_Strict):
    """What a training round may ask of a bank (inclusive ranges)."""

    allowed: bool = True
    local_epochs: PositiveRange = (1, 10)
    batch_size: PositiveRange = (8, 4096)
    lr: RateRange = (1e-5, 1.0)
    mu: MuRange = (0.0, 10.0)
    # The model the bank trains and whose update it sends (parameters in the masked vector).
    max_num_params: int = Field(default=10_000_000, ge=1)
    # The federation's planned rounds and the highest round number a bank trains in.
    max_rounds: int = Field(default=10_000, ge=1)

    @model_validator(mode="after")
    def _ranges(self) -> TrainBounds:
        for name in ("local_epochs", "batch_size", "lr", "mu"):
            _ordered(getattr(self, name), name)
        return self


class StatsBounds(_Strict):
    """The feature-statistics task: answered once per federation (a second answer would give
    a bank's statistics away by subtraction), so there is nothing to configure but whether the
    task is allowed at all."""

    allowed: bool = True


NonNegativeRange = tuple[Annotated[float, Field(ge=0, allow_inf_nan=False)],
                         Annotated[float, Field(ge=0, allow_inf_nan=False)]]
FractionRange = tuple[Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)],
                      Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]]


class TreeBounds(_Strict):
    """What a gradient-boosted trees job may ask of a bank (inclusive ranges): its bins sketch
    (answered once per federation, as the statistics) and each boosting step."""

    allowed: bool = True
    n_estimators: PositiveRange = (1, 1000)
    max_depth: PositiveRange = (1, 8)
    learning_rate: RateRange = (1e-3, 1.0)
    reg_lambda: NonNegativeRange = (0.0, 1e6)
    # Small children are small groups of rows whose summed statistics the aggregator sees.
    min_child_weight: NonNegativeRange = (0.0, 1e9)
    subsample: FractionRange = (1e-3, 1.0)
    colsample_bytree: FractionRange = (1e-3, 1.0)
    max_bin: PositiveRange = (2, 254)
    # The longest vector one step may sum (a level of many open nodes over many features).
    max_vector_length: int = Field(default=50_000_000, ge=1)

    @model_validator(mode="after")
    def _ranges(self) -> TreeBounds:
        for name in ("n_estimators", "max_depth", "learning_rate", "reg_lambda",
                     "min_child_weight", "subsample", "colsample_bytree", "max_bin"):
            _ordered(getattr(self, name), name)
        return self


TREE_BOUNDED = ("n_estimators", "max_depth", "learning_rate", "reg_lambda", "min_child_weight",
                "subsample", "colsample_bytree", "max_bin")


class TaskPolicy(_Strict):
    """The task kinds a bank accepts: a kind whose table says ``allowed = false`` is refused."""

    stats: StatsBounds | None = StatsBounds()
    train: TrainBounds | None = TrainBounds()
    trees: TreeBounds | None = TreeBounds()


class ConsortiumPolicy(_Strict):
    """The secure-aggregation rules every bank applies to every announced round."""

    # Other banks whose inputs must be in any sum this bank's input is unmasked in: checked on
    # the participant list and again on the survivor set the bank confirms before unmasking.
    min_other_banks: int = Field(default=1, ge=1)
    # 0: the complete graph (SecAgg) is required; k > 0: SecAgg+ with at least k neighbours.
    min_neighbours: int = Field(default=FULL_GRAPH, ge=0)
    # The Shamir threshold t must exceed this fraction of each bank's group (at least a
    # majority, so two disjoint sets of banks can never both reach t).
    min_threshold_fraction: float = Field(default=0.5, ge=0.5, lt=1.0)
    max_rounds_per_day: int = Field(default=1440, ge=1)
    # The weight a bank sends next to its update: "constant" (1.0, so its example count never
    # leaves it; the sum of weights over rounds with different participants would otherwise
    # give single banks' counts away by subtraction) or "examples" (min(1, n / weight_scale):
    # FedAvg by size).
    update_weight: Literal["constant", "examples"] = "constant"
    # Distinct enrolled banks whose signatures of this file must accompany it.
    signatures_required: int = Field(default=0, ge=0)
    tasks: TaskPolicy = TaskPolicy()


class Refusal(StrEnum):
    """Why a bank declines an announced round; small and stable so it can be counted."""

    ROUND_NOT_NEXT = "round_not_next"
    NON_BANK_PARTICIPANT = "non_bank_participant"
    TOO_FEW_BANKS = "too_few_banks"
    GRAPH_TOO_SPARSE = "graph_too_sparse"
    THRESHOLD_TOO_LOW = "threshold_too_low"
    SETUP_MISMATCH = "setup_mismatch"
    TASK_NOT_ALLOWED = "task_not_allowed"
    OUT_OF_BOUNDS = "out_of_bounds"
    STATS_ALREADY_ANSWERED = "stats_already_answered"
    TOO_MANY_ROUNDS = "too_many_rounds"
    BINS_ALREADY_ANSWERED = "bins_already_answered"
    # The round sums in the clear; only an in-process simulation allows it.
    PLAIN_SUM = "plain_sum"


REFUSALS: tuple[str, ...] = tuple(r.value for r in Refusal)


@dataclass(frozen=True)
class PolicyRefusal:
    reason: Refusal
    detail: str


@dataclass(frozen=True)
class BankHistory:
    """What the bank itself remembers (persisted in its state) that the policy depends on."""

    last_announced: int
    stats_answered: bool
    rounds_last_day: int
    bins_answered: bool = False


def _outside(value: float, bounds: tuple[float, float]) -> bool:
    return not bounds[0] <= value <= bounds[1]


def check_announcement(
    policy: ConsortiumPolicy,
    ann: Announcement,
    setup: RoundParams,
    allowlist: Allowlist,
    aggregator_id: str,
    history: BankHistory,
) -> PolicyRefusal | None:
    """The first rule ``ann`` (with its secure-aggregation ``setup``) breaks, or None."""

    def refuse(reason: Refusal, detail: str) -> PolicyRefusal:
        return PolicyRefusal(reason, f"round {ann.round}: {detail}")

    if ann.round != history.last_announced + 1:
        return refuse(Refusal.ROUND_NOT_NEXT,
                      f"announced after round {history.last_announced}; rounds go up by one")
    outsiders = [p for p in ann.participants
                 if p == aggregator_id or allowlist.role_of(p) != "bank"]
    if outsiders:
        return refuse(Refusal.NON_BANK_PARTICIPANT, f"{outsiders[0]!r} is not an enrolled bank")
    if tuple(setup.participants) != tuple(sorted(ann.participants)):
        return refuse(Refusal.SETUP_MISMATCH, "the setup names other participants")
    others = len(setup.participants) - 1
    if others < policy.min_other_banks:
        return refuse(Refusal.TOO_FEW_BANKS,
                      f"{others} other banks, the policy needs {policy.min_other_banks}")
    if policy.min_neighbours == FULL_GRAPH:
        if not setup.full_graph:
            return refuse(Refusal.GRAPH_TOO_SPARSE,
                          f"k={setup.neighbours}, the policy requires the complete graph")
    elif not setup.full_graph and effective_degree(setup.n, setup.neighbours) < (
        policy.min_neighbours
    ):
        return refuse(Refusal.GRAPH_TOO_SPARSE,
                      f"k={setup.neighbours}, the policy requires k >= {policy.min_neighbours}")
    # The threshold guards Shamir's secret sharing; a plain sum (simulation only, refused
    # before this unless the bank allows it) shares no secret.
    if ann.secure and setup.threshold <= policy.min_threshold_fraction * setup.group_size:
        return refuse(Refusal.THRESHOLD_TOO_LOW,
                      f"t={setup.threshold} for a group of {setup.group_size}")
    if history.rounds_last_day >= policy.max_rounds_per_day:
        return refuse(Refusal.TOO_MANY_ROUNDS,
                      f"{history.rounds_last_day} rounds in the last day already")
    if ann.kind == "stats":
        if policy.tasks.stats is None or not policy.tasks.stats.allowed:
            return refuse(Refusal.TASK_NOT_ALLOWED, "statistics rounds are not allowed")
        if history.stats_answered:
            return refuse(Refusal.STATS_ALREADY_ANSWERED,
                          "this bank answered the statistics task already")
        return None
    if ann.kind in ("tree_bins", "tree"):
        return _tree_refusal(policy, ann, setup, history, refuse)
    bounds = policy.tasks.train
    if bounds is None or not bounds.allowed:
        return refuse(Refusal.TASK_NOT_ALLOWED, "training rounds are not allowed")
    if ann.train is None:
        return refuse(Refusal.OUT_OF_BOUNDS, "a training round without training instructions")
    for name in ("local_epochs", "batch_size", "lr", "mu"):
        value = getattr(ann.train, name)
        if _outside(value, getattr(bounds, name)):
            return refuse(Refusal.OUT_OF_BOUNDS,
                          f"{name}={value} outside {list(getattr(bounds, name))}")
    if setup.vector_length > bounds.max_num_params:
        return refuse(Refusal.OUT_OF_BOUNDS,
                      f"{setup.vector_length} parameters > {bounds.max_num_params}")
    if ann.planned_rounds > bounds.max_rounds or ann.round > bounds.max_rounds:
        return refuse(Refusal.OUT_OF_BOUNDS,
                      f"round {ann.round} of {ann.planned_rounds} > {bounds.max_rounds}")
    return None


def _tree_refusal(
    policy: ConsortiumPolicy,
    ann: Announcement,
    setup: RoundParams,
    history: BankHistory,
    refuse: Callable[[Refusal, str], PolicyRefusal],
) -> PolicyRefusal | None:
    from fraudfl.trees.params import GBDTParams  # the trees library is needed for trees only

    bounds = policy.tasks.trees
    if bounds is None or not bounds.allowed:
        return refuse(Refusal.TASK_NOT_ALLOWED, "tree jobs are not allowed")
    tree = ann.tree
    if tree is None or (tree.step == "bins") != (ann.kind == "tree_bins"):
        return refuse(Refusal.OUT_OF_BOUNDS, f"a {ann.kind} round without its tree step")
    try:
        params = GBDTParams.parse(tree.params)
    except FraudflError as exc:
        return refuse(Refusal.OUT_OF_BOUNDS, str(exc))
    for name in TREE_BOUNDED:
        value = getattr(params, name)
        if _outside(value, getattr(bounds, name)):
            return refuse(Refusal.OUT_OF_BOUNDS,
                          f"{name}={value} outside {list(getattr(bounds, name))}")
    if setup.vector_length > bounds.max_vector_length:
        return refuse(Refusal.OUT_OF_BOUNDS,
                      f"{setup.vector_length} values > {bounds.max_vector_length}")
    if ann.kind == "tree_bins" and history.bins_answered:
        return refuse(Refusal.BINS_ALREADY_ANSWERED,
                      "this bank answered the bins sketch already")
    return None


def view_digest(ann: Announcement, setup: bytes) -> bytes:
    """What a bank was shown for a round: the task, its parameters, the model's hash and the
    roster (the announcement, re-encoded canonically) and the signed secure-aggregation setup.
    Banks sign it in the consistency stage and mix it into their pairwise masks, so banks shown
    different things (Pasquini et al., CCS'22) cannot be unmasked together."""
    return hashlib.sha256(VIEW_CONTEXT + encode(ann, setup)).digest()


# -- the pinned file ----------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise FraudflError(f"{path}: cannot read policy: {exc.strerror}") from exc


def parse_policy(raw: bytes, source: Path) -> ConsortiumPolicy:
    try:
        return ConsortiumPolicy.model_validate(tomllib.loads(raw.decode("utf-8")))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FraudflError(f"{source}: not valid TOML ({exc})") from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise FraudflError(f"{source}: {where}: {err['msg']}") from exc


def signatures_path(policy_path: Path) -> Path:
    return policy_path.with_name(policy_path.name + SIGNATURES_SUFFIX)


def sign_policy(raw: bytes, identity: Identity) -> bytes:
    return identity.sign(SIGNING_CONTEXT + raw)


def read_signatures(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FraudflError(f"{path}: not a policy signature file") from exc
    sigs = body.get("signatures") if isinstance(body, dict) else None
    if not isinstance(sigs, dict) or not all(isinstance(v, str) for v in sigs.values()):
        raise FraudflError(f"{path}: expected {{\"signatures\": {{bank_id: hex}}}}")
    return sigs


def valid_signers(raw: bytes, signatures: dict[str, str], allowlist: Allowlist) -> list[str]:
    """The enrolled banks whose signature of ``raw`` is valid, sorted."""
    out = []
    for signer, hexsig in signatures.items():
        public = allowlist.key_of(signer)
        try:
            signature = bytes.fromhex(hexsig)
        except ValueError:
            continue
        if (allowlist.role_of(signer) == "bank" and public is not None
                and verify(public, signature, SIGNING_CONTEXT + raw)):
            out.append(signer)
    return sorted(out)


def load_pinned_policy(path: Path, sha256: str, allowlist: Allowlist) -> ConsortiumPolicy:
    """The policy in ``path`` if its SHA-256 is ``sha256`` and enough banks signed it."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise FraudflError(f"{path}: cannot read policy: {exc.strerror}") from exc
    actual = hashlib.sha256(raw).hexdigest()
    if actual != sha256:
        raise FraudflError(
            f"{path}: policy sha256 {actual} differs from the pinned policy_sha256 {sha256}; "
            "refusing to start"
        )
    policy = parse_policy(raw, path)
    if policy.signatures_required:
        sig_path = signatures_path(path)
        signers = valid_signers(raw, read_signatures(sig_path), allowlist)
        if len(signers) < policy.signatures_required:
            raise FraudflError(
                f"{sig_path}: {len(signers)} valid bank signatures of the policy "
                f"({', '.join(signers) or 'none'}), {policy.signatures_required} required"
            )
    return policy
