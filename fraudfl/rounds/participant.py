"""A bank's side of the rounds, sans-IO: control and protocol payloads in, replies out.

On an announcement the bank either declines (not enough privacy budget left) or does its local
work straight away: feature statistics for the statistics round, DP-SGD training with the
FedProx term for a training round. It then hands the result to its secure-aggregation client and
answers the setup with its advertised keys; every later protocol message goes to the client.
Training before advertising keys keeps the later stages short, so the aggregator's per-stage
deadlines after the first one can be tight.

A training round needs the global model it names; when the announcement overtakes the model on
the models topic, it waits as ``pending`` until the model arrives.

Before any of that, the bank checks the announcement against the consortium policy it holds
(``fraudfl.rounds.policy``): round numbers go up by exactly one, only enrolled banks take part,
the graph, threshold, task and its parameters are within bounds, the statistics task is
answered once. A round outside the policy is declined with the rule it breaks, before any data
is read or privacy charged.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from torch import nn

from fraudfl.config import BankSettings
from fraudfl.data.pipeline import FeaturePipeline
from fraudfl.data.schema import Schema
from fraudfl.errors import FraudflError
from fraudfl.identity import Allowlist, Identity
from fraudfl.models import ModelSpec, Task
from fraudfl.personalization import (
    FedPerBank,
    Method,
    ParamPartition,
    PersonalizationConfig,
    PersonalModel,
    personalize_for_bank,
    plain_trainer,
    private_trainer,
)
from fraudfl.privacy.accountant import PrivacyAccountant
from fraudfl.privacy.bank_level import secure_generator
from fraudfl.rounds.events import BankEvent, RoundDeclined, RoundJoined, Trained
from fraudfl.rounds.events import MessageRejected as MessageRejectedEvent
from fraudfl.rounds.messages import (
    ANNOUNCE,
    DECLINE,
    MODEL,
    SECAGG,
    Announcement,
    ControlMessageError,
    Decline,
    ModelInfo,
    TrainInstructions,
    decode,
    decode_model,
    decode_tree_model,
    encode,
)
from fraudfl.rounds.noise import NoiseCalibration, NoisePlan
from fraudfl.rounds.policy import (
    DAY_S,
    BankHistory,
    ConsortiumPolicy,
    PolicyRefusal,
    Refusal,
    check_announcement,
    view_digest,
)
from fraudfl.rounds.tasks import TASKS, Contribution, Declined
from fraudfl.secagg.client import ClientStage, SecAggClient
from fraudfl.secagg.errors import MessageRejected, SecAggError, UsageError
from fraudfl.secagg.messages import RoundSetup
from fraudfl.secagg.messages import decode as decode_secagg
from fraudfl.secagg.plain import PlainSumClient
from fraudfl.training.local import TrainConfig
from fraudfl.trees.ensemble import TreeEnsemble, heap_size
from fraudfl.vocabulary import DeclineReason, RoundKind

log = logging.getLogger(__name__)


_REPLY_STAGE = {
    ClientStage.REVEALED: "advertise_keys",
    ClientStage.SHARED: "share_keys",
    ClientStage.MASKED: "masked_input",
    ClientStage.CONFIRMED: "consistency_check",
    ClientStage.DONE: "unmask",
}


@dataclass(frozen=True)
class Reply:
    """A message for the aggregator (always sealed to it)."""

    round: int
    stage: str
    payload_type: str
    payload: bytes


@dataclass
class RoundReport:
    """What the bank did in its latest round (for logs and metrics)."""

    round: int
    kind: RoundKind
    declined: bool = False
    decline_reason: str = ""
    examples: int = 0
    loss: float = math.nan


class BankParticipant:
    """One bank's round participation; its state is saved and restored by the service."""

    def __init__(
        self,
        config: BankSettings,
        identity: Identity,
        allowlist: Allowlist,
        frame: pd.DataFrame,
        schema: Schema,
        accountant: PrivacyAccountant,
        calibration: NoiseCalibration | None = None,
        policy: ConsortiumPolicy | None = None,
        *,
        source: str = "bank data",
        rng: Callable[[int], np.random.Generator] | None = None,
        work_fraction: Callable[[int], float] | None = None,
    ) -> None:
        """``source`` names the data in error messages. ``rng(round)`` gives the generator of
        a round's batch sampling and noise: unpredictable by default (``secure_generator``);
        a simulation passes a seeded one. ``work_fraction(round)`` is the share of the planned
        local work the bank completes in a round (a simulated straggler; 1.0 by default).

        ``on_input(round, update, weight)``, when set, sees each training round's contribution
        before it is masked (it stays in the process; tests compare the secure sum with it)."""
        self.config = config
        self.source = source
        self.rng: Callable[[int], np.random.Generator] = rng or (lambda _round: secure_generator())
        self.work_fraction: Callable[[int], float] = work_fraction or (lambda _round: 1.0)
        self.on_input: Callable[[int, npt.NDArray[np.float64], float], None] | None = None
        self.bank_id = config.bank_id
        self.identity = identity
        self.allowlist = allowlist
        self.frame = frame
        self.schema = schema
        self.accountant = accountant
        self.policy = policy or ConsortiumPolicy()
        self.client = SecAggClient(identity, allowlist, config.federation_id, config.aggregator_id)
        self.plain = PlainSumClient(identity, allowlist, config.federation_id,
                                    config.aggregator_id)
        self.client.min_other_survivors = self.policy.min_other_banks
        self.model_info: ModelInfo | None = None
        self.params: npt.NDArray[np.float32] | None = None
        self.pending: bytes | None = None
        # The calibrated noise (None while uncalibrated or when configured); the service keeps
        # it next to the accountant, so a restart trains with the same noise.
        self.calibration = calibration
        self.handled_round = -1
        # The newest round known to be over (or past the stage a bank joins in).
        self.closed_round = -1
        self.last_report: RoundReport | None = None
        # The latest round's training instructions: personal training reuses them.
        self.last_train: TrainInstructions | None = None
        # FedPer federations: this bank's personal head (never sent).
        self.fedper: FedPerBank | None = None
        self.rejections: dict[str, int] = {}
        # Policy state, persisted: the newest round announced in sequence, whether the
        # statistics task was answered, and when the bank did work for recent rounds.
        self.last_announced = -1
        self.stats_answered = False
        self.stats_round = -1
        self.round_times: list[float] = []
        # Every decline (budget or policy refusal) by its reason; the service counts them.
        self.events: list[BankEvent] = []
        self.clock: Callable[[], float] = time.time
        # Tree federations: the published ensemble (None before the bins exist), the job's
        # handler (fraudfl.rounds.tree_tasks.BankTreeJob, rebuilt after a restart) and the
        # bins sketch, answered once as the statistics.
        self.ensemble: TreeEnsemble | None = None
        self.tree_job: Any = None
        self.bins_answered = False
        self.bins_round = -1
        self._data: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]] | None = None

    @property
    def model_version(self) -> int | None:
        return None if self.model_info is None else self.model_info.version

    # -- inbound -----------------------------------------------------------------------------

    def note_batch(self, messages: Sequence[tuple[str, bytes]]) -> None:
        """Learn from a batch of the aggregator's messages (``(payload_type, payload)``, e.g.
        the backlog read while catching up) which rounds this bank can no longer join, before
        acting on any of them: a round is over once its model is out, once a later round is
        announced, and once any protocol message of it follows the setup (its advertise stage,
        in which the bank would train, has closed)."""
        for payload_type, payload in messages:
            try:
                if payload_type == ANNOUNCE:
                    ann, _ = decode(payload, Announcement)
                    self._note_closed(ann.round - 1)
                elif payload_type == MODEL:
                    info, _ = decode(payload, ModelInfo)
                    self._note_closed(info.round)
                elif payload_type == SECAGG:
                    self._note_closed(decode_secagg(payload).header.round)
            except (ControlMessageError, MessageRejected):
                continue  # rejected (and counted) when the message itself is handled

    def _note_closed(self, round_number: int) -> None:
        self.closed_round = max(self.closed_round, round_number)

    def receive(self, payload_type: str, payload: bytes) -> list[Reply]:
        """One verified message from the aggregator."""
        try:
            if payload_type == ANNOUNCE:
                return self._on_announce(payload)
            if payload_type == SECAGG:
                return self._on_secagg(payload)
            if payload_type == MODEL:
                return self._on_model(payload)
        except ControlMessageError as exc:
            self._reject("malformed", str(exc))
            return []
        self._reject("malformed", f"unexpected payload type {payload_type[:64]!r}")
        return []

    def drain_events(self) -> list[BankEvent]:
        """The events since the last call, in order (the service logs and counts them)."""
        events, self.events = self.events, []
        return events

    def _reject(self, reason: str, detail: str) -> None:
        self.rejections[reason] = self.rejections.get(reason, 0) + 1
        self.events.append(MessageRejectedEvent(reason, detail))
        log.warning("%s: rejected a message (%s): %r", self.bank_id, reason, detail[:500])

    def _on_model(self, payload: bytes) -> list[Reply]:
        info, params = decode_model(payload)
        if info.kind == "gbdt":
            return self._on_tree_model(payload)
        bounds = self.policy.tasks.train
        if bounds is not None and info.num_params > bounds.max_num_params:
            self._reject("too_large", f"model v{info.version} has {info.num_params} parameters, "
                         f"the policy allows {bounds.max_num_params}")
            return []
        if self.model_info is not None and info.version <= self.model_info.version:
            return []
        self.model_info, self.params = info, params
        self._note_closed(info.round)
        if info.version == 0 or self._data is None:
            # A new pipeline: transform the rows now rather than inside the first training
            # round, whose key-advertisement deadline also covers the local training.
            self._data = None
            self.training_data()
        log.info("%s: received global model v%d", self.bank_id, info.version)
        if self.pending is not None:
            pending, self.pending = self.pending, None
            return self._on_announce(pending)  # dropped there if this model made it stale
        return []

    def _on_tree_model(self, payload: bytes) -> list[Reply]:
        info, ensemble = decode_tree_model(payload)
        bounds = self.policy.tasks.trees
        if bounds is not None and info.num_params > bounds.max_vector_length:
            self._reject("too_large", f"model v{info.version} has {info.num_params} values")
            return []
        if self.model_info is not None and info.version <= self.model_info.version:
            return []
        new_pipeline = self.model_info is None or self.model_info.pipeline != info.pipeline
        self.model_info, self.ensemble, self.params = info, ensemble, None
        self._note_closed(info.round)
        if new_pipeline or self._data is None:
            self._data = None
            self.training_data()
        job = self.tree_job
        if ensemble is not None and job is not None and (
                ensemble.n_rounds >= int(info.spec.get("n_estimators", 0))):
            # The job's last trees are out: release the steps authorised and not taken.
            job.handler.finish()
            self.tree_job = None
        log.info("%s: received tree model v%d (%d trees)", self.bank_id, info.version,
                 0 if ensemble is None else ensemble.n_trees)
        if self.pending is not None:
            pending, self.pending = self.pending, None
            return self._on_announce(pending)
        return []

    def _on_secagg(self, payload: bytes) -> list[Reply]:
        try:
            header = decode_secagg(payload).header
            if header.round != self.client.last_round:
                # A broadcast of a round this bank did not join (or declined).
                log.debug("%s: ignoring secagg message of round %d", self.bank_id, header.round)
                return []
            replies = self.client.receive(payload)
        except MessageRejected as exc:
            self._reject(exc.reason.value, exc.detail)
            return []
        except UsageError as exc:
            # The round's parameters do not fit the input this bank computed for it (e.g. a
            # vector length the announcement did not imply): the aggregator's inconsistency,
            # so a rejection, not a crash of the bank.
            self._reject("inconsistent", str(exc))
            return []
        if self.client.stage is ClientStage.DONE and self.client.last_round == self.stats_round:
            # Its unmask shares are out: the statistics sum with this bank in it can be opened.
            self.stats_answered = True
        if self.client.stage is ClientStage.DONE and self.client.last_round == self.bins_round:
            self.bins_answered = True
        # Label replies by the protocol stage they answer (as the aggregator names stages).
        stage = _REPLY_STAGE.get(self.client.stage, "secagg") if self.client.stage else "secagg"
        return [Reply(self.client.last_round, stage, SECAGG, r) for r in replies]

    def _on_announce(self, payload: bytes) -> list[Reply]:
        ann, setup = decode(payload, Announcement)
        # Every announcement, whether this bank takes part or not, must carry the next round
        # number: an aggregator free to pick numbers could grind the SecAgg+ graph seed. A
        # skipped number does not advance the sequence, so announcing a throwaway round first
        # does not help either.
        if ann.round == self.last_announced + 1:
            self.last_announced = ann.round
        elif ann.round > self.last_announced:
            return self._refuse(ann, PolicyRefusal(
                Refusal.ROUND_NOT_NEXT,
                f"round {ann.round} announced after round {self.last_announced}",
            ))
        if self.bank_id not in ann.participants:
            return []
        if ann.round == self.handled_round:
            # A re-sent announcement (aggregator restart, duplicate delivery): the client
            # answers an identical setup with its original reply, and nothing is retrained.
            client = self.client if ann.secure else self.plain
            if client.last_round != ann.round:
                return []
            return self._setup(ann.round, setup, ann.secure)
        if (ann.round < self.last_announced or ann.round < self.handled_round
                or ann.round <= self.closed_round):
            # A round that is already over, read while catching up (a bank started late or
            # down for a while): training for it would spend privacy budget for nothing.
            log.info("%s: skipping stale announcement of round %d", self.bank_id, ann.round)
            return []
        if not ann.secure and not self.config.allow_plain_sum:
            return self._refuse(ann, PolicyRefusal(
                Refusal.PLAIN_SUM, "the round would send this bank's input unmasked"))
        refusal = self._policy_refusal(ann, setup)
        if refusal is not None:
            return self._refuse(ann, refusal)
        self.client.set_view(view_digest(ann, setup))
        task = TASKS[ann.kind]
        if not task.ready(self, ann):
            log.info("%s: round %d needs model v%s; waiting for it", self.bank_id, ann.round,
                     ann.model_version)
            self.pending = payload
            return []
        self.handled_round = ann.round
        self.round_times.append(self.clock())
        outcome = task.contribute(self, ann, setup)
        if isinstance(outcome, PolicyRefusal):
            return self._refuse(ann, outcome)
        if isinstance(outcome, Declined):
            return self._decline(ann.round, outcome.reason, outcome.detail)
        return self._contribute(ann, setup, outcome)

    def _contribute(self, ann: Announcement, setup: bytes, c: Contribution) -> list[Reply]:
        """Hand the task's vector to the round's client and answer the setup."""
        if c.weight is not None and self.on_input is not None:
            self.on_input(ann.round, c.vector, c.weight)
        (self.client if ann.secure else self.plain).set_input(c.vector, c.weight)
        self.last_report = RoundReport(ann.round, ann.kind, examples=c.examples, loss=c.loss)
        self.events.append(RoundJoined(ann.round, ann.kind))
        if c.trained:
            self.events.append(Trained(ann.round, c.examples, c.loss))
            epsilon = self.accountant.epsilon() if self.accountant.history else 0.0
            log.info("%s: round %d trained on %d examples, loss %.4f, epsilon %.3f",
                     self.bank_id, ann.round, c.examples, c.loss, epsilon)
        return self._setup(ann.round, setup, ann.secure)

    def _policy_refusal(self, ann: Announcement, setup: bytes) -> PolicyRefusal | None:
        # The policy is checked on the setup's parameters, then the whole setup is verified
        # (signature, graph seed, threshold, roles), before the bank reads its data or charges
        # privacy for the round.
        try:
            message = decode_secagg(setup)
        except MessageRejected as exc:
            return PolicyRefusal(Refusal.SETUP_MISMATCH, f"unreadable setup: {exc.detail}")
        if not isinstance(message.payload, RoundSetup) or message.header.round != ann.round:
            return PolicyRefusal(Refusal.SETUP_MISMATCH, "the blob is not this round's setup")
        now = self.clock()
        self.round_times = [t for t in self.round_times if now - t < DAY_S]
        history = BankHistory(ann.round - 1, self.stats_answered, len(self.round_times),
                              bins_answered=self.bins_answered)
        refusal = check_announcement(
            self.policy, ann, message.payload.params, self.allowlist, self.config.aggregator_id,
            history,
        )
        if refusal is not None:
            return refusal
        if not ann.secure:
            return None  # a plain sum (simulation only, allowed above): no keys to verify
        try:
            self.client.check_setup(setup)
        except MessageRejected as exc:
            return PolicyRefusal(Refusal.SETUP_MISMATCH, f"setup refused: {exc.detail}")
        return None

    def _refuse(self, ann: Announcement, refusal: PolicyRefusal) -> list[Reply]:
        """Decline a round outside the policy (log, count); nothing about the data leaves."""
        log.warning("%s: refusing round %d (%s): %s", self.bank_id, ann.round,
                    refusal.reason.value, refusal.detail)
        self._count_decline(ann.round, refusal.reason.value, refusal.detail)
        if self.bank_id not in ann.participants:
            return []
        if ann.round == self.last_announced and ann.round > self.handled_round:
            # In sequence: the round is dealt with. An out-of-sequence number moves nothing,
            # so it cannot make the genuine next round look stale.
            self.handled_round = ann.round
            self.pending = None
        self.last_report = RoundReport(ann.round, ann.kind, declined=True,
                                       decline_reason=refusal.reason.value)
        body = Decline(round=ann.round, reason="policy", detail=refusal.reason.value)
        return [Reply(ann.round, "announce", DECLINE, encode(body))]

    def _count_decline(self, round_number: int, reason: str, detail: str) -> None:
        self.events.append(RoundDeclined(round_number, reason, detail))

    # -- local work --------------------------------------------------------------------------

    def _setup(self, round_number: int, setup: bytes, secure: bool = True) -> list[Reply]:
        try:
            replies = (self.client if secure else self.plain).receive(setup)
        except MessageRejected as exc:
            self._reject(exc.reason.value, f"secure-aggregation setup: {exc.detail}")
            return []
        except SecAggError as exc:
            self._reject("inconsistent", f"secure-aggregation setup: {exc}")
            return []
        return [Reply(round_number, "advertise_keys", SECAGG, r) for r in replies]

    def _decline(
        self, round_number: int, reason: DeclineReason, detail: str
    ) -> list[Reply]:
        log.warning("%s: declining round %d: %s", self.bank_id, round_number, detail)
        self._count_decline(round_number, reason, detail)
        # The detail stays here: a budget's text names delta and the spent epsilon, from which
        # the bank's number of records follows (delta defaults to 0.1 / records).
        detail = ""
        self.last_report = RoundReport(round_number, "train", declined=True,
                                       decline_reason=reason)
        body = Decline(round=round_number, reason=reason, detail=detail)
        return [Reply(round_number, "announce", DECLINE, encode(body))]

    def training_data(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        if self._data is None:
            assert self.model_info is not None
            pipeline = FeaturePipeline.from_dict(self.model_info.pipeline)
            X, y = pipeline.transform(self.frame, source=self.source)
            self._data = (X, y.astype(np.int64))
        return self._data

    def _epsilon(self) -> float:
        if not self.accountant.history:
            return 0.0
        return self.accountant.epsilon()

    @staticmethod
    def train_config(spec: ModelSpec, train: TrainInstructions) -> TrainConfig:
        task: Task = "binary" if spec.num_classes == 2 else "multiclass"
        return TrainConfig(
            task=task, local_epochs=train.local_epochs, max_steps=train.max_steps,
            batch_size=train.batch_size, lr=train.lr, mu=train.mu, pos_weight=train.pos_weight,
            focal_gamma=train.focal_gamma,
        )

    def _personalization_config(self, method: Method) -> PersonalizationConfig:
        pt = self.config.personal_training
        return PersonalizationConfig(method=method, epochs=pt.epochs, lr=pt.lr,
                                     lam=pt.ditto_lambda)

    def noise_multiplier(self, cfg: TrainConfig, num_examples: int) -> float:
        """The bank's DP-SGD noise: configured, or calibrated so that the planned rounds, and
        the personal training after each of their models, spend the target epsilon.

        A calibration is kept (and persisted by the service) with its plan and reused while the
        plan holds, across restarts too; a changed plan is recalibrated for the rounds still
        ahead of it on top of the spent history (``fraudfl.rounds.noise``)."""
        privacy = self.config.privacy
        if privacy.noise_multiplier is not None:
            return privacy.noise_multiplier
        from fraudfl.training.private import dp_planned_steps, dp_sample_rate  # Opacus: DP only

        steps = dp_planned_steps(cfg, num_examples)
        if self.config.personalization in ("finetune", "ditto"):
            personal = self._personalization_config(self.config.personalization)
            steps += dp_planned_steps(personal.train_config(cfg), num_examples)
        assert self.accountant.budget is not None  # a bank's accountant always has its budget
        plan = NoisePlan(
            target_epsilon=privacy.epsilon_budget, delta=self.accountant.budget.delta,
            mechanism=self.accountant.mechanism,
            sample_rate=dp_sample_rate(num_examples, cfg.batch_size),
            steps_per_round=steps, planned_rounds=privacy.planned_rounds,
        )
        previous = self.calibration
        if previous is not None and previous.plan == plan:
            return previous.noise_multiplier
        rounds = plan.planned_rounds if previous is None else previous.remaining_rounds(plan)
        noise = self.accountant.calibrate_noise(
            plan.target_epsilon, plan.sample_rate, steps * rounds
        )
        self.calibration = NoiseCalibration(
            noise_multiplier=noise, plan=plan,
            rounds_trained=0 if previous is None else previous.rounds_trained,
        )
        if previous is not None:
            log.warning("%s: privacy plan changed (%s -> %s); noise multiplier %.3f -> %.3f for "
                        "the %d remaining rounds", self.bank_id, previous.plan, plan,
                        previous.noise_multiplier, noise, rounds)
        log.info("%s: noise multiplier %.3f for epsilon %.3g over %d rounds (epsilon %.3f "
                 "spent)", self.bank_id, noise, plan.target_epsilon, rounds, self._epsilon())
        return noise

    def fedper_state(self, model: nn.Module, personal_layers: int) -> FedPerBank | None:
        if not personal_layers:
            return None
        partition = ParamPartition.for_model(model, personal_layers)
        if self.fedper is None or self.fedper.partition != partition:
            self.fedper = FedPerBank(partition)
        return self.fedper

    def personal_method(self) -> Method:
        """What the bank serves for the latest model: in a FedPer federation its FedPer model
        (the global head is never trained), else its configured personalisation."""
        if self.model_info is not None and self.model_info.personal_layers:
            return "fedper"
        return "none" if self.config.personalization == "fedper" else self.config.personalization

    def personalize(
        self, X_val: npt.NDArray[np.float32], y_val: npt.NDArray[np.int64]
    ) -> PersonalModel | None:
        """The bank's personal model for the latest global model, compared with the global one
        on ``(X_val, y_val)``; None when the bank serves the global model (no personalisation,
        or model v0, which no round has trained yet).

        Fine-tuning and Ditto train under DP through the bank's accountant, which refuses
        (``BudgetExhausted``, before any data is touched) when the budget cannot cover it.
        """
        method = self.personal_method()
        info, params = self.model_info, self.params
        if method == "none" or info is None or params is None or info.version == 0:
            return None
        if method == "fedper" and self.fedper is None:
            return None  # no round trained yet: no head of its own
        spec = ModelSpec.from_dict(info.spec)
        X, y = self.training_data()
        privacy = self.config.privacy
        base = self.train_config(spec, self.last_train or TrainInstructions(
            local_epochs=1, batch_size=256, lr=0.05, mu=0.0,
        ))
        trainer = plain_trainer
        if privacy.enabled and method != "fedper":
            from fraudfl.training.private import DPConfig  # Opacus: DP only

            dp = DPConfig(self.noise_multiplier(base, len(y)), privacy.max_grad_norm,
                          privacy.engine)
            trainer = private_trainer({self.bank_id: self.accountant}, dp)
        return personalize_for_bank(
            self._personalization_config(method), bank_id=self.bank_id, model=spec.build(),
            global_params=params, X_train=X, y_train=y, X_val=X_val, y_val=y_val,
            base_cfg=base, trainer=trainer, rng=self.rng(info.round), fedper=self.fedper,
        )

    # -- state -------------------------------------------------------------------------------

    @staticmethod
    def _saved_ensemble(info: ModelInfo, nodes: bytes | None) -> TreeEnsemble | None:
        if info.trees is None or nodes is None:
            return None
        array = np.frombuffer(nodes, dtype="<f8").astype(np.float64)
        return TreeEnsemble.from_parts(
            info.trees, array.reshape(int(info.trees["n_trees"]),
                                      heap_size(int(info.trees["max_depth"])), 4),
            source="bank state: trees",
        )

    def to_state(self) -> tuple[dict[str, Any], dict[str, bytes]]:
        header: dict[str, Any] = {
            "version": 1,
            "bank_id": self.bank_id,
            "handled_round": self.handled_round,
            "closed_round": self.closed_round,
            "last_announced": self.last_announced,
            "stats_answered": self.stats_answered,
            "stats_round": self.stats_round,
            "bins_answered": self.bins_answered,
            "bins_round": self.bins_round,
            "round_times": self.round_times,
            "client": self.client.to_dict(),
            "plain": self.plain.to_dict(),
            "model_info": None if self.model_info is None else self.model_info.model_dump(),
            "rejections": self.rejections,
            # The ledger (the accountant's own file) must never be behind this checkpoint.
            "ledger_steps": self.accountant.total_steps,
            "last_train": None if self.last_train is None else self.last_train.model_dump(),
            "fedper": None if self.fedper is None else self.fedper.to_dict(),
        }
        blobs: dict[str, bytes] = {}
        if self.params is not None:
            blobs["params"] = np.ascontiguousarray(self.params, dtype="<f4").tobytes()
        if self.ensemble is not None:
            blobs["trees"] = np.ascontiguousarray(self.ensemble.node_array(), "<f8").tobytes()
        if self.pending is not None:
            blobs["pending"] = self.pending
        return header, blobs

    def load_state(self, header: dict[str, Any], blobs: dict[str, bytes]) -> None:
        if header.get("version") != 1 or header.get("bank_id") != self.bank_id:
            raise ValueError("state belongs to another bank or format version")
        self.handled_round = int(header["handled_round"])
        self.closed_round = int(header.get("closed_round", -1))
        # State from before the policy: the newest round it handled is the sequence's start,
        # and having handled any round means it answered the statistics round (round 0).
        self.last_announced = int(header.get("last_announced", self.handled_round))
        self.stats_answered = bool(header.get("stats_answered", self.handled_round >= 0))
        self.stats_round = int(header.get("stats_round", -1))
        self.bins_answered = bool(header.get("bins_answered", False))
        self.bins_round = int(header.get("bins_round", -1))
        self.round_times = [float(t) for t in header.get("round_times", [])]
        self.client = SecAggClient.from_dict(header["client"], self.identity, self.allowlist)
        if "plain" in header:
            self.plain = PlainSumClient.from_dict(
                header["plain"], self.identity, self.allowlist, self.config.federation_id,
                self.config.aggregator_id,
            )
        self.client.min_other_survivors = self.policy.min_other_banks
        if header["model_info"] is not None:
            self.model_info = ModelInfo.model_validate(header["model_info"])
            if self.model_info.kind == "gbdt":
                self.ensemble = self._saved_ensemble(self.model_info, blobs.get("trees"))
            else:
                self.params = np.frombuffer(blobs["params"], dtype="<f4").astype(np.float32)
        self.pending = blobs.get("pending")
        self.rejections = dict(header.get("rejections", {}))
        last_train = header.get("last_train")
        self.last_train = None if last_train is None else TrainInstructions(**last_train)
        fedper = header.get("fedper")
        self.fedper = None if fedper is None else FedPerBank.from_dict(fedper)
        ledger_steps = int(header.get("ledger_steps", 0))
        if self.accountant.total_steps < ledger_steps:
            # A lost or older ledger next to a newer checkpoint: going on would renew spent
            # privacy budget without anyone noticing.
            raise FraudflError(
                f"{self.bank_id}: the privacy ledger holds {self.accountant.total_steps} DP steps, "
                f"the checkpoint records {ledger_steps}: restore the ledger (accountant.json) "
                "that belongs with this state directory"
            )
