"""The aggregator's round state machine, sans-IO.

Events go in (``start``, ``receive``, ``timeout``, ``restart``), each with the caller's clock
reading; :class:`Outbound` messages come out for the service to sign, seal and publish. Nothing
here sleeps, reads a socket or a clock.

A federation runs:

1. a *statistics round* (``kind="stats"``): every bank contributes its feature statistics
   through secure aggregation (exactly, see :mod:`fraudfl.rounds.exact_sum`); the aggregator
   fits the feature pipeline from the sum only, builds the initial model and publishes it as
   model version 0;
2. *training rounds* until ``rounds`` have completed: select banks, announce the round (model
   version, training instructions from the strategy, the secure-aggregation setup), drive the
   SecAgg server through its stages with per-stage deadlines, decode the unmasked sum of
   ``weight * update`` and of the weights, apply the strategy to that sum (never to an
   individual update) and publish model version = round number with its metadata.

Round numbers only grow; an aborted round (fewer than t banks left) is recorded and the next
round gets the next number, so no round is counted twice and secure-aggregation messages can
never be replayed across rounds. Banks that decline for lack of privacy budget are not selected
again. The whole state (round, stage, SecAgg server, model, strategy state, history) is
serialisable; :meth:`Orchestrator.restart` resumes it after a crash and re-emits the last
transition's messages (the receivers deduplicate them).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fraudfl.config import FederationSettings
from fraudfl.data.pipeline import FeaturePipeline
from fraudfl.data.schema import Schema
from fraudfl.errors import FraudflError
from fraudfl.identity import Allowlist, Identity
from fraudfl.models import ModelSpec
from fraudfl.personalization import FedPerStrategy, ParamPartition
from fraudfl.privacy.accountant import PrivacyAccountant
from fraudfl.rounds.events import (
    BankDeclined,
    BankDropped,
    FederationFinished,
    OrchestratorEvent,
    RoundAborted,
    RoundCompleted,
    RoundStarted,
    StageEnded,
)
from fraudfl.rounds.events import MessageRejected as MessageRejectedEvent
from fraudfl.rounds.messages import (
    ANNOUNCE,
    DECLINE,
    MODEL,
    SECAGG,
    ControlMessageError,
    Decline,
    ModelInfo,
    decode,
    encode,
    encode_model,
    encode_tree_model,
    params_digest,
    tree_digest,
)
from fraudfl.rounds.tasks import TASKS
from fraudfl.rounds.tree_tasks import TreeJob
from fraudfl.secagg.errors import MessageRejected
from fraudfl.secagg.graph import effective_degree
from fraudfl.secagg.messages import (
    STAGE_ADVERTISE,
    STAGE_CONSISTENCY,
    STAGE_MASKED,
    STAGE_REVEAL,
    STAGE_SETUP,
    STAGE_SHARE,
    STAGE_UNMASK,
    Abort,
)
from fraudfl.secagg.messages import encode as encode_secagg
from fraudfl.secagg.plain import PlainSumServer
from fraudfl.secagg.server import Outgoing, SecAggServer, ServerStatus, SumServer, round_params
from fraudfl.strategy import Strategy, make_strategy
from fraudfl.vocabulary import STAGES, AbortReason, RoundKind

log = logging.getLogger(__name__)

STAGE_LABELS = {
    STAGE_ADVERTISE: "advertise_keys",
    # SecAgg+'s nonce reveal completes the key advertisement (same label and deadline).
    STAGE_REVEAL: "advertise_keys",
    STAGE_SHARE: "share_keys",
    STAGE_MASKED: "masked_input",
    STAGE_CONSISTENCY: "consistency_check",
    STAGE_UNMASK: "unmask",
}
Topic = Literal["control", "inbox", "models"]
Evaluator = Callable[[ModelSpec, FeaturePipeline, npt.NDArray[np.float32]], dict[str, float]]
STATE_VERSION = 1


@dataclass(frozen=True)
class Outbound:
    """One message for the service to publish. ``seal_to`` lists who may read the payload."""

    topic: Topic
    recipient: str
    round: int
    stage: str
    payload_type: str
    payload: bytes
    seal_to: tuple[str, ...]


@dataclass
class RoundRecord:
    """What happened in one round, kept in the aggregator's state and published with models."""

    round: int
    kind: RoundKind
    status: str  # running | completed | aborted
    selected: list[str]
    survivors: list[str] = field(default_factory=list)
    dropouts: list[str] = field(default_factory=list)
    declined: list[str] = field(default_factory=list)
    reason: str = ""
    # The reason's class (the aborted-rounds metric's label); empty unless aborted.
    cause: AbortReason | Literal[""] = ""
    model_version: int | None = None
    federation_epsilon: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    started_at: float = 0.0
    finished_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundRecord:
        return cls(**data)


class Orchestrator:
    """Rounds of one federation, from the aggregator's side."""

    def __init__(
        self,
        config: FederationSettings,
        identity: Identity,
        allowlist: Allowlist,
        schema: Schema,
        *,
        evaluator: Evaluator | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.allowlist = allowlist
        self.schema = schema
        self.evaluator = evaluator
        self.federation = config.federation_id
        # Enrolled banks: the allowlist's bank role (banks refuse rounds with anyone else). The
        # allowlist is loaded once at start-up, so this is fixed; computed here, not per message.
        self.banks: tuple[str, ...] = tuple(
            p for p in allowlist.members("bank") if p != identity.participant_id
        )
        if len(self.banks) < config.rounds.min_banks:
            # No round could ever start: refuse at start-up instead of aborting round 0.
            raise FraudflError(
                f"allowlist: {len(self.banks)} bank(s) enrolled, fewer than "
                f"rounds.min_banks = {config.rounds.min_banks}"
            )
        self.strategy: Strategy = make_strategy(
            config.strategy.name,
            mu=config.training.mu,
            server_lr=config.strategy.server_lr,
            server_momentum=config.strategy.momentum,
            eta=config.strategy.eta,
            beta1=config.strategy.beta1,
            beta2=config.strategy.beta2,
            tau=config.strategy.tau,
            fit_config={
                "local_epochs": config.training.local_epochs,
                "batch_size": config.training.batch_size,
                "lr": config.training.lr,
            },
        )
        self.round = -1
        self.server: SumServer | None = None
        self.current: RoundRecord | None = None
        self.history: list[RoundRecord] = []
        self.exhausted: set[str] = set()
        self.completed = 0
        # Training rounds to complete (boosting rounds for trees); grows with extend() (a
        # finished federation continued).
        self.planned_rounds = (config.trees.n_estimators if config.training.model == "gbdt"
                               else config.rounds.rounds)
        self.consecutive_aborts = 0
        self.finished = False
        self.stage_started = 0.0
        self.spec: ModelSpec | None = None
        self.pipeline: FeaturePipeline | None = None
        self.params: npt.NDArray[np.float32] | None = None
        self.model_version: int | None = None
        # A gbdt federation's boosting job (fraudfl.rounds.tree_tasks), from the stats round on.
        self.trees: TreeJob | None = None
        self.federation_accountant = PrivacyAccountant("rdp", label="federation")
        self.outbox: list[Outbound] = []
        self.rejections: dict[str, int] = {}
        # What happened since the caller last drained them (not part of the saved state).
        self.events: list[OrchestratorEvent] = []
        self._stage_key: tuple[int, str] = (-1, "idle")
        self._stage_since = 0.0
        self._stage_dropouts = 0

    # -- who takes part ---------------------------------------------------------------------

    def _select(self, round_number: int) -> list[str]:
        eligible = [b for b in self.banks if b not in self.exhausted]
        wanted = self.config.rounds.banks_per_round
        if wanted is None or wanted >= len(eligible):
            return eligible
        rng = np.random.default_rng([self.config.rounds.seed, round_number])
        return sorted(rng.choice(eligible, size=wanted, replace=False).tolist())

    def threshold(self, n: int) -> int:
        """t: more than half of each bank's group (what banks accept), at least ``min_banks``.

        A plain sum (secure aggregation off, which only simulated banks answer) shares no
        secret: any bank's input completes it, as the FedProx paper's FedAvg keeps a round in
        which one device of ten finished.
        """
        if not self.config.secagg.enabled:
            return 1
        degree = effective_degree(n, self.config.secagg.neighbours)
        group = n if degree == 0 else degree + 1
        return max(group // 2 + 1, min(self.config.rounds.min_banks, group))

    def partition(self) -> ParamPartition | None:
        """FedPer (``training.personal_layers``): the body aggregated and the banks' heads."""
        layers = self.config.training.personal_layers
        if not layers or self.spec is None:
            return None
        return ParamPartition.for_model(self.spec.build(), layers)

    def round_strategy(self) -> Strategy:
        partition = self.partition()
        return self.strategy if partition is None else FedPerStrategy(self.strategy, partition)

    # -- events ------------------------------------------------------------------------------

    def drain_events(self) -> list[OrchestratorEvent]:
        """The events since the last call, in order (the caller logs and counts them)."""
        events, self.events = self.events, []
        return events

    def start(self, now: float) -> list[Outbound]:
        """Begin the federation: the statistics round first."""
        if self.round >= 0:
            raise RuntimeError("already started; use restart() after loading a checkpoint")
        return self._emit(self._start_round(0, now), now)

    def restart(self, now: float) -> list[Outbound]:
        """After loading a checkpoint: give the stage a fresh deadline and re-send its messages."""
        self.stage_started = now
        if self.finished:
            return list(self.outbox)
        if self.server is None or self.current is None:
            # The round in progress was not resumable (see load_state): re-publish the latest
            # model in case it had not gone out yet, then start the next round.
            return self._emit(list(self.outbox) + self._next_round(now), now)
        self._stage_key, self._stage_since = (self.round, self.stage), now
        return list(self.outbox)

    def extend(self, rounds: int, now: float) -> list[Outbound]:
        """Plan ``rounds`` more training rounds; a finished federation starts the next one."""
        if rounds < 0:
            raise ValueError("rounds must be >= 0")
        if self.config.training.model == "gbdt":
            raise FraudflError("a tree job cannot be extended; start a new federation")
        self.planned_rounds = max(self.planned_rounds, self.completed) + rounds
        if not self.finished or rounds == 0 or self.round < 0:
            return []
        self.finished = False
        self.consecutive_aborts = 0
        return self._emit(self._next_round(now), now)

    @property
    def stage(self) -> str:
        if self.finished:
            return "finished"
        if self.server is None:
            return "idle"
        return STAGE_LABELS[self.server.stage]

    def deadline(self) -> float | None:
        """The clock reading at which :meth:`timeout` should be called (None: nothing waits)."""
        if self.finished or self.server is None:
            return None
        return self.stage_started + self._stage_timeout(self.server.stage)

    def _stage_timeout(self, stage: int) -> float:
        t = self.config.timeouts
        return {
            STAGE_ADVERTISE: t.advertise_keys,
            STAGE_REVEAL: t.advertise_keys,
            STAGE_SHARE: t.share_keys,
            STAGE_MASKED: t.masked_input,
            STAGE_CONSISTENCY: t.consistency_check,
            STAGE_UNMASK: t.unmask,
        }[stage]

    def timeout(self, now: float) -> list[Outbound]:
        """The current stage's deadline passed: continue with whoever answered (or abort)."""
        if self.server is None or self.finished:
            return []
        stage = self.server.stage
        pending = self.server.pending()
        log.info(
            "round %d: %s timed out; missing %s", self.round, STAGE_LABELS.get(stage, stage),
            pending,
        )
        self._note_dropouts(pending)
        return self._emit(self._after_server(self.server.stage_timeout(), now), now)

    def receive(
        self, sender: str, round_number: int, payload_type: str, payload: bytes, now: float
    ) -> list[Outbound]:
        """One verified message from a bank (the transport checked signature and enrolment)."""
        if self.finished or sender not in self.banks:
            return []
        if round_number != self.round or self.server is None or self.current is None:
            log.debug("ignoring %s from %s for round %d (now %d)", payload_type, sender,
                      round_number, self.round)
            return []
        if payload_type == DECLINE:
            return self._emit(self._on_decline(sender, payload, now), now)
        if payload_type != SECAGG:
            self._reject("malformed", f"unexpected payload type {payload_type[:64]!r} from "
                         f"{sender}")
            return []
        try:
            out = self.server.receive(payload)
        except MessageRejected as exc:
            self._reject(exc.reason.value, f"{sender}: {exc.detail}")
            return []
        msgs = self._after_server(out, now)
        return self._emit(msgs + self._close_if_only_declined(now), now)

    # -- internals ---------------------------------------------------------------------------

    def _emit(self, out: list[Outbound], now: float) -> list[Outbound]:
        if out:
            self.outbox = out
        self._note_stage(now)
        return out

    def _note_stage(self, now: float) -> None:
        """A StageEnded event when the (round, stage) moved on since the last look."""
        key = (self.round, self.stage)
        if key == self._stage_key:
            return
        round_number, stage = self._stage_key
        if stage in STAGES:
            rec = (self.current if self.current is not None and self.current.round == round_number
                   else next((r for r in reversed(self.history) if r.round == round_number),
                             None))
            if rec is not None:
                out = len(rec.dropouts) + len(rec.declined)
                self.events.append(StageEnded(
                    round_number, stage, max(0.0, now - self._stage_since),
                    participants=max(0, len(rec.selected) - out),
                    dropouts=max(0, len(rec.dropouts) - self._stage_dropouts),
                ))
        self._stage_key, self._stage_since = key, now
        self._stage_dropouts = 0 if self.current is None else len(self.current.dropouts)

    def _reject(self, reason: str, detail: str) -> None:
        self.rejections[reason] = self.rejections.get(reason, 0) + 1
        self.events.append(MessageRejectedEvent(reason, detail))
        log.warning("round %d: rejected a message (%s): %r", self.round, reason, detail[:500])

    def _on_decline(self, sender: str, payload: bytes, now: float) -> list[Outbound]:
        assert self.server is not None and self.current is not None
        try:
            decline, _ = decode(payload, Decline)
        except ControlMessageError as exc:
            self._reject("malformed", f"decline from {sender}: {exc}")
            return []
        if decline.round != self.round or sender not in self.current.selected:
            return []
        if sender not in self.current.declined:
            self.current.declined.append(sender)
            self.events.append(BankDeclined(self.round, sender, decline.reason, decline.detail))
            log.info("round %d: %s declined (%s) %r", self.round, sender, decline.reason,
                     decline.detail)
        if decline.reason == "privacy_budget":
            self.exhausted.add(sender)
        return self._close_if_only_declined(now)

    def _close_if_only_declined(self, now: float) -> list[Outbound]:
        """Everyone the stage still awaits has declined: no point waiting for the deadline."""
        if self.server is None or self.current is None:
            return []
        pending = self.server.pending()
        if pending and set(pending) <= set(self.current.declined):
            return self._after_server(self.server.stage_timeout(), now)
        return []

    def _note_dropouts(self, pending: Sequence[str]) -> None:
        assert self.current is not None
        for bank in pending:
            if bank not in self.current.dropouts and bank not in self.current.declined:
                self.current.dropouts.append(bank)
                self.events.append(BankDropped(self.current.round, bank))

    def _next_kind(self) -> RoundKind:
        if self.pipeline is None:
            return "stats"
        if self.trees is None:
            return "train"
        return "tree_bins" if self.trees.edges is None else "tree"

    def _start_round(self, round_number: int, now: float) -> list[Outbound]:
        self.round = round_number
        kind = self._next_kind()
        selected = self._select(round_number)
        self.current = RoundRecord(round_number, kind, "running", selected, started_at=now)
        self.stage_started = now
        self.events.append(RoundStarted(round_number, kind, tuple(selected)))
        if len(selected) < self.config.rounds.min_banks:
            self.server = None
            return self._abort(f"only {len(selected)} banks can take part", now,
                               "no_eligible_banks")
        task = TASKS[kind]
        shape = task.shape(self, selected)
        sa = self.config.secagg
        params = round_params(
            self.federation, round_number, selected, threshold=self.threshold(len(selected)),
            vector_length=shape.vector_length, neighbours=sa.neighbours, weighted=shape.weighted,
            bits=shape.bits, clip=shape.clip, weight_max=1.0,
        )
        server_cls = SecAggServer if sa.enabled else PlainSumServer
        self.server = server_cls(self.identity, self.allowlist, self.federation, round_number,
                                 params)
        setup = self.server.start()
        announcement = task.announce(self, selected)
        log.info("round %d (%s): announced to %s", round_number, kind, selected)
        return [
            Outbound("control", "*", round_number, "announce", ANNOUNCE,
                     encode(announcement, setup[0].data), self.banks)
        ]

    def _after_server(self, out: list[Outgoing], now: float) -> list[Outbound]:
        assert self.server is not None and self.current is not None
        if out:
            self.stage_started = now
        if self.server.status is ServerStatus.ABORTED:
            self._note_dropouts(self.server.pending())
            # The server's own Abort broadcast tells banks to drop the round.
            msgs = self._wrap(out)
            reason = self.server.abort_reason
            # The server aborts below the threshold, or when the revealed shares do not
            # reconstruct a dropped bank's secrets.
            cause: AbortReason = (
                "unmasking_failed" if reason.startswith(("cannot reconstruct", "reconstructed"))
                else "below_threshold"
            )
            return msgs + self._abort(reason, now, cause)
        if self.server.status is ServerStatus.DONE:
            return self._wrap(out) + self._finish(now)
        return self._wrap(out)

    def _wrap(self, out: list[Outgoing]) -> list[Outbound]:
        msgs: list[Outbound] = []
        stage = STAGE_LABELS[self.server.stage] if self.server else "setup"
        for o in out:
            if len(o.recipients) == 1:
                msgs.append(Outbound("inbox", o.recipients[0], self.round, stage, SECAGG, o.data,
                                     o.recipients))
            else:
                msgs.append(Outbound("control", "*", self.round, stage, SECAGG, o.data,
                                     self.banks))
        return msgs

    def _abort(self, reason: str, now: float, cause: AbortReason) -> list[Outbound]:
        assert self.current is not None
        rec = self.current
        rec.status, rec.reason, rec.cause, rec.finished_at = "aborted", reason, cause, now
        self.history.append(rec)
        self.server = None
        self.current = None
        self._note_stage(now)
        self.events.append(RoundAborted(rec.round, rec.kind, cause, reason))
        self.consecutive_aborts += 1
        log.warning("round %d aborted: %s", rec.round, reason)
        if self.consecutive_aborts >= self.config.max_consecutive_aborts:
            log.error("%d rounds in a row aborted; stopping", self.consecutive_aborts)
            return self._finished()
        return self._next_round(now)

    def _finished(self) -> list[Outbound]:
        self.finished = True
        self.events.append(FederationFinished(self.completed, self.planned_rounds))
        return []

    def _next_round(self, now: float) -> list[Outbound]:
        if self.completed >= self.planned_rounds or (self.trees is not None and self.trees.done):
            return self._finished()
        eligible = [b for b in self.banks if b not in self.exhausted]
        if len(eligible) < self.config.rounds.min_banks:
            log.error("only %d banks have privacy budget left (%s), fewer than min_banks=%d; "
                      "stopping", len(eligible), eligible, self.config.rounds.min_banks)
            return self._finished()
        return self._start_round(self.round + 1, now)

    def _finish(self, now: float) -> list[Outbound]:
        assert self.server is not None and self.current is not None
        rec = self.current
        rec.survivors = sorted(self.server.survivors)
        self._note_dropouts([b for b in self.server.params.participants
                             if b not in rec.survivors])
        published = next((r.model_version for r in reversed(self.history)
                          if r.status == "completed"), None)
        problem = TASKS[rec.kind].reduce(self, self.server, rec)
        if problem is not None:
            return self._abort(problem, now, "invalid_sum")
        rec.status, rec.finished_at = "completed", now
        self.consecutive_aborts = 0
        assert self.pipeline is not None and self.model_version is not None
        rec.model_version = self.model_version
        if self.evaluator is not None and self.trees is None:
            assert self.params is not None and self.spec is not None
            rec.metrics = self.evaluator(self.spec, self.pipeline, self.params)
        self.history.append(rec)
        self.server = None
        self.current = None
        self._note_stage(now)
        self.events.append(RoundCompleted(
            rec.round, rec.kind, rec.finished_at - rec.started_at, self.model_version,
            tuple(rec.survivors), tuple(rec.metrics.items()), rec.federation_epsilon,
        ))
        log.info(
            "round %d (%s) completed with %d banks (dropouts %s, declined %s)%s",
            rec.round, rec.kind, len(rec.survivors), rec.dropouts, rec.declined,
            "".join(f", {k} {v:.4f}" for k, v in rec.metrics.items()),
        )
        # A tree step that only chose splits leaves the published model as it was.
        model = [] if self.model_version == published else [self._model_message(rec)]
        return [*model, *self._next_round(now)]

    def _model_message(self, rec: RoundRecord) -> Outbound:
        if self.trees is not None:
            return self._tree_model_message(rec)
        assert self.params is not None and self.spec is not None and self.pipeline is not None
        assert self.model_version is not None
        info = ModelInfo(
            version=self.model_version, round=rec.round, spec=self.spec.to_dict(),
            pipeline=self.pipeline.to_dict(), num_params=len(self.params),
            sha256=params_digest(self.params), participants=tuple(rec.survivors),
            dropouts=tuple(rec.dropouts), declined=tuple(rec.declined),
            federation_epsilon=rec.federation_epsilon,
            metrics={k: v for k, v in rec.metrics.items() if math.isfinite(v)},
            created_ms=int(rec.finished_at * 1000),
            personal_layers=self.config.training.personal_layers,
        )
        return Outbound("models", "*", rec.round, "model", MODEL,
                        encode_model(info, self.params), self.banks)

    def _tree_model_message(self, rec: RoundRecord) -> Outbound:
        assert self.trees is not None and self.pipeline is not None
        assert self.model_version is not None
        ensemble = self.trees.ensemble
        nodes = np.zeros(0) if ensemble is None else ensemble.node_array()
        info = ModelInfo(
            version=self.model_version, round=rec.round,
            spec=self.trees.params.model_dump(mode="json"), pipeline=self.pipeline.to_dict(),
            num_params=int(nodes.size), sha256=tree_digest(nodes),
            participants=tuple(rec.survivors), dropouts=tuple(rec.dropouts),
            declined=tuple(rec.declined), federation_epsilon=rec.federation_epsilon,
            metrics={k: v for k, v in rec.metrics.items() if math.isfinite(v)},
            created_ms=int(rec.finished_at * 1000), kind="gbdt",
            trees=None if ensemble is None else ensemble.metadata(),
        )
        return Outbound("models", "*", rec.round, "model", MODEL,
                        encode_tree_model(info, ensemble), self.banks)

    # -- state -------------------------------------------------------------------------------

    def to_state(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        """JSON header and binary blobs of the complete state (see :mod:`fraudfl.checkpoint`)."""
        header: dict[str, Any] = {
            "version": STATE_VERSION,
            "federation": self.federation,
            "round": self.round,
            "completed": self.completed,
            "planned_rounds": self.planned_rounds,
            "consecutive_aborts": self.consecutive_aborts,
            "finished": self.finished,
            "exhausted": sorted(self.exhausted),
            "history": [r.to_dict() for r in self.history],
            "current": None if self.current is None else self.current.to_dict(),
            "server": None if self.server is None else self.server.to_dict(),
            "spec": None if self.spec is None else self.spec.to_dict(),
            "pipeline": None if self.pipeline is None else self.pipeline.to_dict(),
            "model_version": self.model_version,
            "federation_accountant": self.federation_accountant.to_dict(),
            "strategy_state": sorted(self.strategy.state()),
            "outbox": [
                {"topic": o.topic, "recipient": o.recipient, "round": o.round, "stage": o.stage,
                 "payload_type": o.payload_type, "seal_to": list(o.seal_to)}
                for o in self.outbox
            ],
            "rejections": self.rejections,
            "trees": None,
        }
        blobs: dict[str, bytes] = {}
        if self.trees is not None:
            header["trees"], tree_blobs = self.trees.to_state()
            blobs.update(tree_blobs)
        if self.params is not None:
            blobs["params"] = np.ascontiguousarray(self.params, dtype="<f4").tobytes()
        for name, arr in self.strategy.state().items():
            blobs[f"strategy.{name}"] = np.ascontiguousarray(arr, dtype="<f8").tobytes()
        for i, o in enumerate(self.outbox):
            blobs[f"outbox.{i}"] = o.payload
        return header, blobs

    def load_state(self, header: dict[str, Any], blobs: dict[str, bytes]) -> None:
        """Restore from :meth:`to_state`; a round whose protocol state cannot be restored is
        aborted (and the next one started by :meth:`restart`)."""
        if header.get("version") != STATE_VERSION or header.get("federation") != self.federation:
            raise ValueError("checkpoint belongs to another federation or format version")
        self.round = int(header["round"])
        self.completed = int(header["completed"])
        self.planned_rounds = int(header.get("planned_rounds", self.config.rounds.rounds))
        self.consecutive_aborts = int(header["consecutive_aborts"])
        self.finished = bool(header["finished"])
        self.exhausted = set(header["exhausted"])
        self.history = [RoundRecord.from_dict(r) for r in header["history"]]
        self.spec = None if header["spec"] is None else ModelSpec.from_dict(header["spec"])
        self.pipeline = (
            None if header["pipeline"] is None else FeaturePipeline.from_dict(header["pipeline"])
        )
        self.model_version = header["model_version"]
        self.federation_accountant = PrivacyAccountant.from_dict(header["federation_accountant"])
        self.rejections = dict(header.get("rejections", {}))
        trees = header.get("trees")
        self.trees = None if trees is None else TreeJob.from_state(trees, blobs)
        if "params" in blobs:
            self.params = np.frombuffer(blobs["params"], dtype="<f4").astype(np.float32)
        strategy_state = {
            name: np.frombuffer(blobs[f"strategy.{name}"], dtype="<f8").copy()
            for name in header["strategy_state"]
        }
        if strategy_state:
            self.strategy.load_state(strategy_state)
        self.outbox = [
            Outbound(o["topic"], o["recipient"], int(o["round"]), o["stage"], o["payload_type"],
                     blobs[f"outbox.{i}"], tuple(o["seal_to"]))
            for i, o in enumerate(header["outbox"])
        ]
        self.current = None if header["current"] is None else RoundRecord.from_dict(
            header["current"]
        )
        self.server = None
        if header["server"] is not None and self.current is not None:
            try:
                server_cls = PlainSumServer if "plain_version" in header["server"] else SecAggServer
                self.server = server_cls.from_dict(header["server"], self.identity,
                                                   self.allowlist)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("round %d cannot resume (%s); aborting it", self.round, exc)
                rec = self.current
                rec.status, rec.reason = "aborted", f"not resumable after restart: {exc}"
                rec.cause = "aggregator_restart"
                self.history.append(rec)
                self.current = None
                self.events.append(RoundAborted(rec.round, rec.kind, rec.cause, rec.reason))
                # Banks accept only the next round number (fraudfl.rounds.policy), so the
                # aborted round's announcement still goes out if it had not, followed by a
                # signed Abort of it: banks then count the round as over without training.
                abort = encode_secagg(self.identity, self.federation, self.round,
                                      Abort(rec.reason), stage=STAGE_SETUP)
                self.outbox = [o for o in self.outbox
                               if o.topic == "models" or o.payload_type == ANNOUNCE] + [
                    Outbound("control", "*", self.round, "setup", SECAGG, abort, self.banks)
                ]
