"""The bank-node process: a :class:`BankParticipant` wired to Kafka, its state and metrics.

The node listens to the control topic, its own inbox and the models topic. Every message that
changes its state is followed by a checkpoint (participant state including the secure-aggregation
client, the replies about to be sent, channel offsets and seen ids; one atomic file) before the
replies are published, and the privacy accountant is saved to its own file right after training,
before the update can leave the bank. A restarted node loads both and continues: it re-sends
unsent replies, skips messages it has seen, never retrains a round it already trained and never
forgets privacy it spent.

Each new global model is also written as a scoring artifact (``state_dir/model``), with the
decision threshold chosen on the bank's own validation split.

The node pins the run of the federation it takes part in (:mod:`fraudfl.rounds.run`): a newer
run announced after it has taken part in one is refused, with an error in the log, the
``fraudfl_bank_run_refused`` gauge at 1 and ``/readyz`` failing, until the operator joins the
new run (``fraudfl bank-node --join-run RUN_ID``, which keeps the privacy ledger).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from functools import partial
from typing import Any

import numpy as np

from fraudfl.checkpoint import atomic_write_json, load_checkpoint, save_checkpoint
from fraudfl.config import BankNodeConfig
from fraudfl.data.loading import load_bank_file
from fraudfl.data.pipeline import FeaturePipeline
from fraudfl.data.schema import load_schema
from fraudfl.data.split import train_val_split
from fraudfl.errors import FraudflError
from fraudfl.identity import Allowlist, Identity
from fraudfl.isolation import isolated
from fraudfl.models import ModelSpec, set_flat_params
from fraudfl.monitoring import BankMetrics
from fraudfl.monitoring.broker_probe import BrokerProbe, report_consumer_progress
from fraudfl.monitoring.health import Health
from fraudfl.monitoring.metrics import QUALITY_METRICS, ConsumedTopic, ModelKind
from fraudfl.privacy.accountant import (
    BudgetExhausted,
    PrivacyAccountant,
    PrivacyBudget,
    default_delta,
    warn_if_vacuous,
)
from fraudfl.rounds.events import (
    BankEvent,
    MessageRejected,
    RoundDeclined,
    RoundJoined,
    Trained,
)
from fraudfl.rounds.messages import ANNOUNCE, MODEL
from fraudfl.rounds.noise import CALIBRATION_FILE, NoiseCalibration
from fraudfl.rounds.participant import BankParticipant, Reply
from fraudfl.rounds.policy import ConsortiumPolicy, load_pinned_policy
from fraudfl.rounds.run import RUN, RunMarker, RunRecord
from fraudfl.training.evaluation import evaluate, evaluate_ensemble
from fraudfl.transport.base import Transport
from fraudfl.transport.channel import Channel, ChannelState, VerifiedMessage
from fraudfl.transport.errors import RejectReason, TransportError
from fraudfl.transport.sealing import EncryptionKey
from fraudfl.transport.topics import TopicLayout

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "bank.ckpt"
STATUS_FILE = "status.json"
ACCOUNTANT_FILE = "accountant.json"
MODEL_DIR = "model"
POLL_S = 0.2
# Catching up: polls that may follow an announcement before the batch is acted on.
DRAIN_POLL_S = 0.05
DRAIN_POLLS = 200
PUBLISH_ATTEMPTS = 30
# Lag and position metrics are refreshed this often, not on every poll.
PROGRESS_EVERY_S = 5.0
# A new bank's scan of the control topic for the current run: until this many empty polls,
# and for at least this long (a first fetch may come back empty).
RUN_SCAN_IDLE_POLLS = 2
RUN_SCAN_MIN_S = 1.0
# The stages a bank answers; advertise_keys includes local training.
BANK_STAGES = (
    "advertise_keys", "share_keys", "masked_input", "consistency_check", "unmask"
)


class BankNodeService:
    """One bank; ``run()`` serves rounds until ``stop`` is set."""

    def __init__(
        self,
        config: BankNodeConfig,
        transport: Transport,
        *,
        metrics: BankMetrics | None = None,
        health: Health | None = None,
        probe_transport: Transport | None = None,
    ) -> None:
        self.config = config
        self.transport = transport
        self.metrics = metrics
        self.health = health if health is not None else Health()
        self.probe = None if probe_transport is None else BrokerProbe(
            probe_transport.list_topics, self.health, metrics=metrics
        )
        self.identity = Identity.load(config.bank_id, config.identity_key)
        self.allowlist = Allowlist.load(config.allowlist)
        encryption_key = EncryptionKey.load(config.bank_id, config.encryption_key)
        self.allowlist.check_own_keys(
            config.bank_id, self.identity.public_bytes, encryption_key.public_bytes,
            config.allowlist, role="bank",
        )
        if config.aggregator_id not in self.allowlist:
            raise FraudflError(
                f"{config.allowlist}: the aggregator {config.aggregator_id!r} is not enrolled"
            )
        if self.allowlist.role_of(config.aggregator_id) != "aggregator":
            raise FraudflError(
                f"{config.allowlist}: {config.aggregator_id!r} is enrolled as "
                f"{self.allowlist.role_of(config.aggregator_id)}, not as the aggregator"
            )
        policy = self._policy()
        schema = load_schema(config.schema_path)
        frame = load_bank_file(config.data, schema)
        if len(frame) == 0:
            raise FraudflError(f"{config.data}: no rows")
        self.train_frame, self.val_frame = train_val_split(
            frame, schema, config.val_fraction, seed=config.split_seed
        )
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.accountant_path = config.state_dir / ACCOUNTANT_FILE
        privacy = config.privacy
        budget = PrivacyBudget(
            privacy.epsilon_budget, privacy.delta or default_delta(len(self.train_frame))
        )
        if privacy.enabled:
            warn_if_vacuous(budget.delta, len(self.train_frame), config.bank_id)
        accountant = PrivacyAccountant.load_or_create(
            self.accountant_path, privacy.accountant, budget=budget, label=config.bank_id
        )
        self.calibration_path = config.state_dir / CALIBRATION_FILE
        self.participant = BankParticipant(
            config, self.identity, self.allowlist, self.train_frame, schema, accountant,
            NoiseCalibration.load(self.calibration_path), policy, source=str(config.data),
        )
        self.channel = Channel(
            transport,
            self.identity,
            self.allowlist,
            config.federation_id,
            encryption_key=encryption_key,
            max_record_bytes=config.kafka.max_message_bytes,
            on_reject=self._on_reject,
        )
        self._encryption_key = encryption_key
        self.layout = TopicLayout(config.federation_id)
        self.checkpoint_path = config.state_dir / CHECKPOINT_FILE
        self.outbox: list[Reply] = []
        previous = self._previous_status()
        self.epsilon_by_round: dict[str, float] = previous.get("epsilon_by_round", {})
        # The latest model's quality on the validation split: global, and personal if served.
        self.model_quality: dict[str, Any] | None = previous.get("model_quality")
        self.run_record = RunRecord.load(config.state_dir)
        # Messages of another run than the pinned one are dropped: an older run's (catching up
        # through the topics' history) quietly, a newer one's loudly (``refused``).
        self.refused: str | None = None
        self._had_state = False
        self._progress_at = -PROGRESS_EVERY_S
        self._topic_roles: dict[str, ConsumedTopic] = {
            self.layout.control: "control", self.layout.models: "models",
            self.layout.inbox(config.bank_id): "inbox",
        }
        self.health.check("keys", True, "identity, encryption key and allowlist loaded")
        self.health.check("run", True, self._run_detail())

    def _policy(self) -> ConsortiumPolicy:
        """The consortium policy: the pinned file (refusing to start when it differs from
        the pin), or the built-in defaults, which every bank of the federation shares."""
        config = self.config
        if config.policy is None or config.policy_sha256 is None:
            log.warning("%s: no consortium policy configured; using the built-in defaults",
                        config.bank_id)
            return ConsortiumPolicy()
        policy = load_pinned_policy(config.policy, config.policy_sha256, self.allowlist)
        log.info("%s: consortium policy %s (sha256 %s)", config.bank_id, config.policy,
                 config.policy_sha256)
        return policy

    def _on_reject(self, reason: RejectReason, detail: str, record: object) -> None:
        self._count_rejection(reason.value)

    def _count_rejection(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.message_rejected(reason)

    # -- main loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> int:
        topics = [self.layout.control, self.layout.inbox(self.config.bank_id), self.layout.models]
        if self.probe is not None:
            self.probe.expect_topics(topics)
            self.probe.start()
        try:
            return self._serve(topics, stop)
        finally:
            if self.probe is not None:
                self.probe.stop()

    def _serve(self, topics: list[str], stop: threading.Event | None) -> int:
        self._write_status()
        self._wait_for_topics(topics, stop)
        if stop is not None and stop.is_set():
            return 0
        if self.probe is None:
            self.health.check("topics", True, "present at start")
        if self.run_record is None and not self.checkpoint_path.exists():
            self._pin_newest_run()
        self.channel.listen(topics)
        saved = load_checkpoint(self.checkpoint_path)
        self._had_state = saved is not None
        if saved is not None:
            header, blobs = saved
            self.participant.load_state(header["participant"], blobs)
            self.channel.restore(ChannelState.from_bytes(blobs["channel"]))
            self.outbox = [
                Reply(int(r["round"]), r["stage"], r["payload_type"], blobs[f"outbox.{i}"])
                for i, r in enumerate(header["outbox"])
            ]
            log.warning("%s: restarted from checkpoint (round %d, model v%s, %d replies to "
                        "re-send)", self.config.bank_id, self.participant.handled_round,
                        self.participant.model_version, len(self.outbox))
            self._send(self.outbox)
        self._publish_privacy()
        while stop is None or not stop.is_set():
            self.health.beat()
            try:
                messages = self._receive_batch()
            except TransportError as exc:
                log.warning("%s: receive failed (%s); retrying", self.config.bank_id, exc)
                if self.metrics is not None:
                    self.metrics.kafka_error("receive_failed")
                    if self.probe is None:
                        self.metrics.set_broker_up(False)
                time.sleep(POLL_S)
                continue
            self.health.polled()
            if self.metrics is not None and self.probe is None:
                # Without a probe, the main loop's own polls are the evidence.
                self.metrics.set_broker_up(True)
            now = time.monotonic()
            if self.metrics is not None and now - self._progress_at >= PROGRESS_EVERY_S:
                self._progress_at = now
                report_consumer_progress(self.transport, self.metrics, self._topic_roles)
            messages = self._of_our_run(messages)
            replies: list[Reply] = []
            changed = new_model = False
            # Models first, and everything the batch shows about finished rounds noted before
            # acting: an announcement of a round that is over (read while catching up) is
            # then recognised as stale rather than trained for.
            messages.sort(key=lambda m: m.payload_type != MODEL)
            self.participant.note_batch([
                (m.payload_type, m.payload) for m in messages
                if m.sender == self.config.aggregator_id
            ])
            for msg in messages:
                if self.metrics is not None:
                    self.metrics.message_received(len(msg.payload))
                if msg.sender != self.config.aggregator_id:
                    log.warning("%s: ignoring a message from %s (not the aggregator)",
                                self.config.bank_id, msg.sender)
                    continue
                before = (self.participant.handled_round, self.participant.model_version)
                started = time.perf_counter()
                out = isolated(
                    partial(self.participant.receive, msg.payload_type, msg.payload),
                    f"{msg.payload_type} from the aggregator", self._count_rejection,
                )
                after = (self.participant.handled_round, self.participant.model_version)
                if self.metrics is not None:
                    for reply in out:
                        if reply.stage in BANK_STAGES:
                            self.metrics.stage_completed(
                                reply.stage,  # type: ignore[arg-type]
                                duration_seconds=time.perf_counter() - started,
                            )
                self._count_events(time.perf_counter() - started)
                if after[0] != before[0]:
                    self._publish_privacy()
                    self._write_status()
                new_model = new_model or (msg.payload_type == MODEL and after[1] != before[1])
                changed = changed or bool(out) or after != before
                replies += out
            if changed:
                self.outbox = replies
                self._checkpoint()
                self._send(replies)
            if new_model:
                # After the replies are out, so personal training never delays a round; once
                # per batch, for the newest model only (a bank catching up reads several).
                self._save_artifact()
                self._write_status()
        log.info("%s: stopped", self.config.bank_id)
        return 0

    # -- runs --------------------------------------------------------------------------------

    def _of_our_run(self, messages: list[VerifiedMessage]) -> list[VerifiedMessage]:
        """Handle run markers; drop the aggregator's messages of any other run than the pinned
        one. A run's messages are all signed after its marker, so an earlier timestamp means an
        earlier run, whatever topic it comes from and whenever it is read."""
        for msg in messages:
            if msg.sender == self.config.aggregator_id and msg.payload_type == RUN:
                self._on_run_marker(msg.payload)
        return [
            msg for msg in messages
            if msg.sender != self.config.aggregator_id
            or (msg.payload_type != RUN and self._of_pinned_run(msg.envelope.timestamp_ms))
        ]

    def _of_pinned_run(self, timestamp_ms: int) -> bool:
        rec = self.run_record
        if self.refused is not None:
            return False
        if rec is None:
            return True  # no run known yet (state from before runs existed)
        return rec.started_ms is not None and timestamp_ms >= rec.started_ms

    def _pin_newest_run(self) -> None:
        """A new bank joins the federation's current run, not the first one in the topic: it
        reads the control topic once for the newest run marker, then reads it again from the
        start (the earlier runs' messages are skipped as older ones)."""
        scan = Channel(
            self.transport, self.identity, self.allowlist, self.config.federation_id,
            encryption_key=self._encryption_key,
            max_record_bytes=self.config.kafka.max_message_bytes,
        )
        (control,) = scan.listen([self.layout.control])
        newest: RunMarker | None = None
        idle, started = 0, time.monotonic()
        while idle < RUN_SCAN_IDLE_POLLS or time.monotonic() - started < RUN_SCAN_MIN_S:
            batch = scan.receive(DRAIN_POLL_S * 10)
            idle = 0 if batch else idle + 1
            for msg in batch:
                if msg.sender != self.config.aggregator_id or msg.payload_type != RUN:
                    continue
                try:
                    marker = RunMarker.decode(msg.payload)
                except ValueError:
                    continue
                if newest is None or marker.started_ms > newest.started_ms:
                    newest = marker
        self.transport.seek({control: 0})
        if newest is not None:
            self.run_record = RunRecord.of(newest)
            self.run_record.save(self.config.state_dir)
            log.info("%s: joining the federation's current run %s", self.config.bank_id,
                     newest.run_id)
            self.health.check("run", True, self._run_detail())

    def _on_run_marker(self, payload: bytes) -> None:
        bank = self.config.bank_id
        try:
            marker = RunMarker.decode(payload)
        except ValueError as exc:
            log.warning("%s: ignoring a run marker: %s", bank, exc)
            if self.metrics is not None:
                self.metrics.message_rejected("malformed")
            return
        rec = self.run_record
        if rec is not None and marker.run_id == rec.run_id:
            if rec.started_ms is None:
                rec.started_ms = marker.started_ms
                rec.save(self.config.state_dir)
                log.info("%s: joined run %s", bank, marker.run_id)
            return
        if rec is not None and (rec.started_ms is None or marker.started_ms < rec.started_ms):
            return  # an earlier run's history (or, after --join-run, everything before ours)
        if rec is not None and (rec.participated or self._had_state):
            if self.refused != marker.run_id:
                self.refused = marker.run_id
                log.error(
                    "%s: REFUSING new run %s of federation %s: this bank holds state of run "
                    "%s. Its rounds are ignored until the operator runs `fraudfl bank-node "
                    "--join-run %s` (the privacy ledger is kept; docs/operations.md)",
                    bank, marker.run_id, self.config.federation_id, rec.run_id, marker.run_id,
                )
                if self.metrics is not None:
                    self.metrics.set_run_refused(True)
                self.health.check("run", False, self._run_detail())
            return
        if rec is not None:
            log.info("%s: following run %s (no part taken in run %s)", bank, marker.run_id,
                     rec.run_id)
        self.run_record = RunRecord.of(marker)
        self.run_record.save(self.config.state_dir)
        self.health.check("run", True, self._run_detail())

    def _run_detail(self) -> str:
        rec = self.run_record
        pinned = "none yet" if rec is None else rec.run_id
        if self.refused is not None:
            return f"refusing new run {self.refused}; pinned to {pinned}"
        return f"run {pinned}"

    def _note_participation(self) -> None:
        rec = self.run_record
        if rec is not None and not rec.participated:
            rec.participated = True
            rec.save(self.config.state_dir)

    def _receive_batch(self) -> list[VerifiedMessage]:
        """One poll; after an announcement, read on until nothing more is waiting, so that a
        backlog (a bank catching up) is judged as a whole: the model or later messages showing
        that the announced round is over may come from another topic, in a later poll."""
        messages = self.channel.receive(POLL_S)
        if any(m.payload_type == ANNOUNCE for m in messages):
            for _ in range(DRAIN_POLLS):
                more = self.channel.receive(DRAIN_POLL_S)
                if not more:
                    break
                messages += more
        return messages

    def _wait_for_topics(self, topics: list[str], stop: threading.Event | None) -> None:
        """The aggregator creates the topics; a bank started first waits for them."""
        announced = False
        while True:
            try:
                existing = self.transport.list_topics()
            except TransportError as exc:
                existing = set()
                log.debug("listing topics failed: %s", exc)
            if all(t in existing for t in topics):
                return
            if not announced:
                log.info("%s: waiting for the federation's topics", self.config.bank_id)
                announced = True
            self.health.beat()
            if stop is not None and stop.wait(0.5):
                return
            if stop is None:
                time.sleep(0.5)

    def _send(self, replies: list[Reply]) -> None:
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                self._publish(replies)
                return
            except TransportError as exc:
                # The aggregator deduplicates, so sending the replies again is safe.
                log.warning("%s: sending failed (attempt %d): %s", self.config.bank_id,
                            attempt, exc)
                if self.metrics is not None:
                    self.metrics.kafka_error("send_failed")
                time.sleep(min(5.0, attempt))
        raise TransportError(f"could not send after {PUBLISH_ATTEMPTS} attempts")

    def _publish(self, replies: list[Reply]) -> None:
        if replies:
            self._note_participation()
        for r in replies:
            self.channel.send(
                self.layout.to_aggregator, recipient=self.config.aggregator_id, round=r.round,
                stage=r.stage, payload_type=r.payload_type, payload=r.payload, seal_to=True,
            )
            if self.metrics is not None:
                self.metrics.message_sent(len(r.payload))
        if replies:
            self.channel.flush()

    def _checkpoint(self) -> None:
        self._save_privacy()
        header, blobs = self.participant.to_state()
        blobs["channel"] = self.channel.checkpoint().to_bytes()
        outbox: list[dict[str, Any]] = []
        for i, r in enumerate(self.outbox):
            outbox.append({"round": r.round, "stage": r.stage, "payload_type": r.payload_type})
            blobs[f"outbox.{i}"] = r.payload
        save_checkpoint(self.checkpoint_path, {"participant": header, "outbox": outbox}, blobs)

    def _save_privacy(self) -> None:
        # The accountant is the bank's privacy ledger: saved first, in its own file. The noise
        # calibration follows it (a crash in between leaves its round count behind the ledger,
        # which only makes a recalibration more conservative).
        p = self.participant
        p.accountant.save(self.accountant_path)
        if p.calibration is not None:
            p.calibration.save(self.calibration_path)

    # -- observability and scoring -----------------------------------------------------------

    def _count_events(self, seconds: float) -> None:
        """The participant's events as metrics; ``seconds``: the call that produced them."""
        for event in self.participant.drain_events():
            if self.metrics is None:
                continue
            try:
                self._count_event(event, seconds)
            except ValueError:  # a label outside the metric's closed set: a bug, never fatal
                log.exception("%s: could not count %r", self.config.bank_id, event)

    def _count_event(self, event: BankEvent, seconds: float) -> None:
        assert self.metrics is not None
        if isinstance(event, RoundJoined):
            self.metrics.round_joined(event.kind)
        elif isinstance(event, Trained):
            self.metrics.training_completed(
                duration_seconds=seconds, examples=event.examples, loss=event.loss
            )
        elif isinstance(event, RoundDeclined):
            self.metrics.round_declined(event.reason)  # type: ignore[arg-type]
        elif isinstance(event, MessageRejected):
            self.metrics.message_rejected(event.reason)

    def _previous_status(self) -> dict[str, Any]:
        try:
            status = json.loads((self.config.state_dir / STATUS_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return status if isinstance(status, dict) else {}

    def _write_status(self) -> None:
        """A small JSON summary (rounds, model, privacy) for operators and the demo."""
        p = self.participant
        report = p.last_report
        acc = p.accountant
        epsilon = acc.epsilon() if acc.history else 0.0
        if report is not None:
            self.epsilon_by_round[str(report.round)] = epsilon
        atomic_write_json(self.config.state_dir / STATUS_FILE, {
            "bank_id": self.config.bank_id,
            "handled_round": p.handled_round,
            "model_version": p.model_version,
            "epsilon": epsilon,
            "epsilon_by_round": self.epsilon_by_round,
            "epsilon_budget": None if acc.budget is None else acc.budget.epsilon,
            "model_quality": self.model_quality,
            "last_round": None if report is None else {
                "round": report.round, "kind": report.kind, "declined": report.declined,
                "examples": report.examples,
                "loss": report.loss if np.isfinite(report.loss) else None,
            },
            "time": time.time(),
        })

    def _publish_privacy(self) -> None:
        acc = self.participant.accountant
        if self.metrics is None or acc.budget is None:
            return
        spent = acc.epsilon() if acc.history else 0.0
        self.metrics.set_privacy(
            epsilon_spent=spent, epsilon_budget=acc.budget.epsilon, delta=acc.budget.delta
        )

    def _save_tree_artifact(self) -> None:
        """The published tree ensemble as the served model (kind ``gbdt``); trees are not
        personalised here (a bank's local trees on top are library-only so far)."""
        from fraudfl.scoring.artifact import TARGET_FPR, build_tree_artifact, save_artifact

        p = self.participant
        info, ensemble = p.model_info, p.ensemble
        if info is None or ensemble is None or ensemble.n_rounds == 0:
            return  # the bins and base margin: nothing to serve yet
        pipeline = FeaturePipeline.from_dict(info.pipeline)
        X_val, y_val = pipeline.transform(self.val_frame, source=f"{self.config.data} (val)")
        y_val = y_val.astype(np.int64)
        served = evaluate_ensemble(ensemble, X_val, y_val, pipeline.task)
        self.model_quality = {
            "version": info.version, "personalization": "none",
            "global": {k: float(v) if np.isfinite(v) else None for k, v in served.items()},
        }
        if self.metrics is not None:
            self.metrics.set_model_version(info.version)
            for name in QUALITY_METRICS:
                if np.isfinite(served.get(name, np.nan)):
                    self.metrics.set_validation_quality(name, served[name])
                    self.metrics.set_model_quality("global", name, served[name])
        if ensemble.num_class != 2:
            return
        artifact = build_tree_artifact(
            ensemble, pipeline, X_val, y_val, target_fpr=TARGET_FPR, version=info.version,
            round=info.round, bank_id=self.config.bank_id, metrics=served,
        )
        save_artifact(artifact, self.config.state_dir / MODEL_DIR)

    def _save_artifact(self) -> None:
        """Write the model the bank serves (the global one or its personalised one) where the
        scoring service loads it, with both models' quality on the bank's validation split."""
        from fraudfl.scoring.artifact import TARGET_FPR, build_artifact, save_artifact

        p = self.participant
        info, params = p.model_info, p.params
        if info is not None and info.kind == "gbdt":
            self._save_tree_artifact()
            return
        if info is None or params is None:
            return
        spec = ModelSpec.from_dict(info.spec)
        pipeline = FeaturePipeline.from_dict(info.pipeline)
        X_val, y_val = pipeline.transform(self.val_frame, source=f"{self.config.data} (val)")
        y_val = y_val.astype(np.int64)
        spent_before = p.accountant.total_steps
        try:
            personal = p.personalize(X_val, y_val)
        except BudgetExhausted as exc:
            log.warning("%s: not personalising model v%d, serving the global model: %s",
                        self.config.bank_id, info.version, exc)
            personal = None
            if self.metrics is not None:
                self.metrics.personalization_skipped("privacy_budget")
        if p.accountant.total_steps != spent_before:
            # Personal training spent privacy: the ledger is saved before anything else.
            self._save_privacy()
            self._publish_privacy()
        model = spec.build()
        if personal is None:
            set_flat_params(model, params)
            served = evaluate(model, X_val, y_val, pipeline.task)
            compared: dict[ModelKind, dict[str, float]] = {"global": served}
        else:
            set_flat_params(model, personal.params)
            served = personal.comparison.personal_metrics
            compared = {"global": personal.comparison.global_metrics, "personal": served}
        # "personal" is missing when the bank serves the global model (no personalisation, or
        # skipped for lack of privacy budget).
        self.model_quality = {
            "version": info.version,
            "personalization": p.personal_method(),
            **{kind: {k: float(v) if np.isfinite(v) else None for k, v in values.items()}
               for kind, values in compared.items()},
        }
        if self.metrics is not None:
            self.metrics.set_model_version(info.version)
            if info.federation_epsilon is not None:
                self.metrics.set_federation_epsilon(info.federation_epsilon)
            for name in QUALITY_METRICS:
                if np.isfinite(served.get(name, np.nan)):
                    self.metrics.set_validation_quality(name, served[name])
                for kind, values in compared.items():
                    if np.isfinite(values.get(name, np.nan)):
                        self.metrics.set_model_quality(kind, name, values[name])
        if spec.num_classes != 2:
            return
        artifact = build_artifact(
            model, spec, pipeline, X_val, y_val, target_fpr=TARGET_FPR,
            version=info.version, round=info.round, bank_id=self.config.bank_id,
            personalization="none" if personal is None else p.personal_method(),
            metrics=served,
        )
        save_artifact(artifact, self.config.state_dir / MODEL_DIR)
