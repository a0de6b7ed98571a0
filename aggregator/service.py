"""The aggregator process: the round orchestrator wired to Kafka, checkpoints and metrics.

The loop polls the aggregator's inbound topic, feeds every verified message to the
:class:`~fraudfl.rounds.orchestrator.Orchestrator`, and calls its timeout when a stage's deadline
passes. Whenever an event produces messages, the service first writes a checkpoint (orchestrator
state, the messages to send, channel offsets and seen message ids; one atomic file) and only
then publishes them. After a crash it loads that checkpoint, re-reads from the saved offsets
(already-seen message ids are dropped) and re-sends the last messages; every receiver
deduplicates, so the round continues where it was, nothing is lost and no round is counted
twice.

The service runs until stopped (SIGTERM, ``fraudfl admin stop``), not until its rounds are
done: a federation that completed its planned rounds is *finished* and keeps serving metrics,
health and the admin endpoint, where ``fraudfl admin extend N`` plans more rounds (as does
restarting it with a larger ``rounds.rounds``). Topics are created when missing and checked
when present, never deleted: a fresh aggregator (no checkpoint) refuses to start over topics
that already hold a federation's history unless told to begin a new run (``new_run``), whose
id it announces to the banks (:mod:`fraudfl.rounds.run`).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt

from fraudfl.admin import AdminRefused, AdminRequest, AdminServer
from fraudfl.checkpoint import load_checkpoint, save_checkpoint
from fraudfl.config import AggregatorConfig
from fraudfl.data.loading import load_bank_file
from fraudfl.data.pipeline import FeaturePipeline
from fraudfl.data.schema import Schema, load_schema
from fraudfl.data.validation import IntArray
from fraudfl.errors import FraudflError
from fraudfl.identity import Allowlist, Identity
from fraudfl.isolation import isolated
from fraudfl.models import ModelSpec, set_flat_params
from fraudfl.monitoring import AggregatorMetrics
from fraudfl.monitoring.broker_probe import BrokerProbe, report_consumer_progress
from fraudfl.monitoring.health import Health
from fraudfl.rounds.events import (
    MessageRejected,
    OrchestratorEvent,
    RoundAborted,
    RoundCompleted,
    RoundStarted,
    StageEnded,
)
from fraudfl.rounds.orchestrator import Orchestrator, Outbound, RoundRecord
from fraudfl.rounds.run import RUN, RunRecord, new_marker
from fraudfl.training.evaluation import evaluate
from fraudfl.transport.base import TopicPartition, Transport
from fraudfl.transport.channel import Channel, ChannelState
from fraudfl.transport.errors import RejectReason, TransportError
from fraudfl.transport.sealing import EncryptionKey
from fraudfl.transport.topics import TopicLayout

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "aggregator.ckpt"
ROUND_LOG_FILE = "rounds.jsonl"
POLL_S = 0.2
PUBLISH_ATTEMPTS = 30
# How long a fresh aggregator looks for records in the control topic (an earlier run's history).
HISTORY_PROBE_S = 3.0
# Lag and position metrics are refreshed this often, not on every poll.
PROGRESS_EVERY_S = 5.0
MAX_EXTENSION = 10_000


class AggregatorService:
    """One aggregator; ``run()`` serves until ``stop`` is set or ``fraudfl admin stop`` (with
    ``stay_up``, the long-running service), or until the federation is finished."""

    def __init__(
        self,
        config: AggregatorConfig,
        transport: Transport,
        *,
        metrics: AggregatorMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        health: Health | None = None,
        admin: AdminServer | None = None,
        probe_transport: Transport | None = None,
        new_run: str | None = None,
        stay_up: bool = False,
    ) -> None:
        self.config = config
        self.transport = transport
        self.metrics = metrics
        self.clock = clock
        self.health = health if health is not None else Health()
        self.admin = admin
        self.new_run = new_run
        self.stay_up = stay_up
        self.probe = None if probe_transport is None else BrokerProbe(
            probe_transport.list_topics, self.health, metrics=metrics
        )
        self.identity = Identity.load(config.aggregator_id, config.identity_key)
        self.allowlist = Allowlist.load(config.allowlist)
        encryption_key = EncryptionKey.load(config.aggregator_id, config.encryption_key)
        self.allowlist.check_own_keys(
            config.aggregator_id, self.identity.public_bytes, encryption_key.public_bytes,
            config.allowlist, role="aggregator",
        )
        schema = load_schema(config.schema_file)
        evaluator = self._evaluator(schema) if config.eval_data is not None else None
        self.orchestrator = Orchestrator(
            config, self.identity, self.allowlist, schema, evaluator=evaluator
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
        self.layout = TopicLayout(config.federation_id)
        self.checkpoint_path = config.state_dir / CHECKPOINT_FILE
        # One JSON line per finished round: for operators, and the demo's live table.
        self.round_log = config.state_dir / ROUND_LOG_FILE
        self.run_record: RunRecord | None = None
        self._stopping = False
        self._finished_logged = False
        self._progress_at = -PROGRESS_EVERY_S
        self.health.check("keys", True, "identity, encryption key and allowlist loaded")

    # -- wiring ------------------------------------------------------------------------------

    def _evaluator(
        self, schema: Schema
    ) -> Callable[[ModelSpec, FeaturePipeline, npt.NDArray[np.float32]], dict[str, float]]:
        assert self.config.eval_data is not None
        source = str(self.config.eval_data)
        frame = load_bank_file(self.config.eval_data, schema)
        # The pipeline is fitted once (statistics round), so the held-out data is transformed
        # once for it rather than again for every round's model.
        cache: list[tuple[FeaturePipeline, npt.NDArray[np.float32], IntArray]] = []

        def score(
            spec: ModelSpec, pipeline: FeaturePipeline, params: npt.NDArray[np.float32]
        ) -> dict[str, float]:
            if not cache or cache[0][0] is not pipeline:
                cache[:] = [(pipeline, *pipeline.transform(frame, source=source))]
            _, X, y = cache[0]
            model = spec.build()
            set_flat_params(model, params)
            return evaluate(model, X, y, pipeline.task)

        return score

    def _on_reject(self, reason: RejectReason, detail: str, record: object) -> None:
        self._count_rejection(reason.value)

    def _count_rejection(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.message_rejected(reason)

    # -- main loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None) -> int:
        """Serve (see the class); returns the exit status: 1 when the federation finished
        short of its planned rounds and the service was not asked to stay up, else 0."""
        if self.probe is not None:
            self.probe.expect_topics(s.name for s in self.layout.specs(self.orchestrator.banks))
            self.probe.start()
        try:
            return self._serve(stop)
        finally:
            if self.probe is not None:
                self.probe.stop()

    def _serve(self, stop: threading.Event | None) -> int:
        orch = self.orchestrator
        saved = load_checkpoint(self.checkpoint_path)
        created = self.layout.ensure(
            self.transport, orch.banks, replication_factor=self.config.kafka.replication_factor
        )
        if created:
            log.info("created %d missing topics: %s", len(created), ", ".join(created))
        if self.probe is None:
            self.health.check("topics", True, "present at start")
        self.run_record = RunRecord.load(self.config.state_dir)
        if saved is not None and self.new_run is not None:
            raise FraudflError(
                f"{self.checkpoint_path}: a new run ({self.new_run}) cannot start over this "
                f"aggregator's checkpoint; move it away first (docs/operations.md)"
            )
        if saved is None:
            had_history = self._has_history()
            if had_history and self.new_run is None:
                raise FraudflError(
                    f"the topics of federation {self.config.federation_id} already hold a "
                    f"run's history but {self.checkpoint_path} is missing: restore the "
                    f"checkpoint (docs/operations.md), or start a new run with --new-run RUN_ID"
                )
        self.channel.listen([self.layout.to_aggregator])
        now = self.clock()
        if saved is None:
            if had_history:
                # Banks' replies to the earlier run would otherwise be read as this run's.
                skipped = self._skip_history()
                log.warning("new run %s over an earlier run's history: skipped %d messages",
                            self.new_run, skipped)
            marker = new_marker(self.new_run)
            self.run_record = RunRecord.of(marker)
            self.run_record.save(self.config.state_dir)
            log.info("starting federation %s, run %s, with banks %s",
                     self.config.federation_id, marker.run_id, orch.banks)
            announce = Outbound("control", "*", 0, RUN, RUN, marker.encode(), ())
            out = [announce, *orch.start(now)]
        else:
            header, blobs = saved
            orch.load_state(header["orchestrator"], blobs)
            self.channel.restore(ChannelState.from_bytes(blobs["channel"]))
            if orch.finished:
                # Nothing was interrupted: restarting a finished federation is not a recovery.
                log.info("restarted finished federation (%d rounds completed)", orch.completed)
            else:
                resumed = orch.server is not None
                log.warning(
                    "restarted from checkpoint: round %d, stage %s, %d rounds completed (%s)",
                    orch.round, orch.stage, orch.completed,
                    "resuming the round" if resumed else "the round in progress was aborted",
                )
                if self.metrics is not None:
                    self.metrics.recovered("resumed" if resumed else "round_aborted")
            out = orch.restart(now)
            more = self.config.rounds.rounds - orch.planned_rounds
            # A tree job's length is [trees] n_estimators, not rounds.rounds.
            if more > 0 and self.config.training.model != "gbdt":
                log.info("rounds.rounds raised to %d: planning %d more rounds",
                         self.config.rounds.rounds, more)
                out += orch.extend(more, now)
        self._dispatch(out, force_checkpoint=True)
        while not self._stopping and (self.stay_up or not orch.finished):
            if stop is not None and stop.is_set():
                log.info("stopping on request at round %d, stage %s", orch.round, orch.stage)
                return 0
            self.health.beat()
            self._handle_admin()
            self._step()
        if orch.finished and not self.stay_up and orch.completed < orch.planned_rounds:
            return 1
        return 0

    def _step(self) -> None:
        """One poll of the inbound topic and whatever it, or a deadline, triggers."""
        orch = self.orchestrator
        deadline = orch.deadline()
        wait = POLL_S if deadline is None else min(POLL_S, max(0.0, deadline - self.clock()))
        batch: list[Outbound] = []
        try:
            messages = self.channel.receive(wait)
        except TransportError as exc:
            log.warning("receive failed (%s); retrying", exc)
            if self.metrics is not None:
                self.metrics.kafka_error("receive_failed")
                if self.probe is None:
                    self.metrics.set_broker_up(False)
            time.sleep(POLL_S)
            return
        self.health.polled()
        if self.metrics is not None and self.probe is None:
            # Without a probe, the main loop's own polls are the evidence.
            self.metrics.set_broker_up(True)
        for msg in messages:
            if self.metrics is not None:
                self.metrics.message_received(len(msg.payload))
            batch += isolated(
                partial(orch.receive, msg.sender, msg.round, msg.payload_type, msg.payload,
                        self.clock()),
                f"{msg.payload_type} from {msg.sender}", self._count_rejection,
            )
        deadline = orch.deadline()
        if deadline is not None and self.clock() >= deadline:
            batch += orch.timeout(self.clock())
            self._dispatch(batch, force_checkpoint=True)
        else:
            self._dispatch(batch)
        self._report_progress()

    def _has_history(self) -> bool:
        """Whether the control topic holds records (of an earlier run)."""
        control = TopicPartition(self.layout.control, 0)
        self.transport.assign([control])
        deadline = time.monotonic() + HISTORY_PROBE_S
        while time.monotonic() < deadline:
            if self.transport.poll(0.5):
                return True
        return False

    def _skip_history(self) -> int:
        skipped = 0
        while batch := self.channel.receive(1.0):
            skipped += len(batch)
        return skipped

    # -- lifecycle ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        orch = self.orchestrator
        return {
            "federation": self.config.federation_id,
            "run_id": None if self.run_record is None else self.run_record.run_id,
            "state": orch.stage,
            "finished": orch.finished,
            "round": orch.round,
            "completed_rounds": orch.completed,
            "planned_rounds": orch.planned_rounds,
            "model_version": orch.model_version,
        }

    def _handle_admin(self) -> None:
        if self.admin is None:
            return
        for request in self.admin.pending():
            try:
                request.reply.set_result(self._admin_command(request))
            except AdminRefused as exc:
                request.reply.set_exception(exc)

    def _admin_command(self, request: AdminRequest) -> dict[str, Any]:
        if request.command == "stop":
            log.warning("stopping on an admin request")
            self._stopping = True
            return {"stopping": True, **self.status()}
        rounds = request.args.get("rounds")
        if not isinstance(rounds, int) or isinstance(rounds, bool) or not (
            1 <= rounds <= MAX_EXTENSION
        ):
            raise AdminRefused(f"rounds must be an integer from 1 to {MAX_EXTENSION}")
        if self.orchestrator.round < 0:
            raise AdminRefused("the federation has not started yet")
        if self.config.training.model == "gbdt":
            raise AdminRefused("a tree job cannot be extended; start a new run")
        was_finished = self.orchestrator.finished
        out = self.orchestrator.extend(rounds, self.clock())
        log.warning("admin: extended by %d rounds to %d planned%s", rounds,
                    self.orchestrator.planned_rounds, " (resuming)" if was_finished else "")
        self._finished_logged = False
        self._dispatch(out, force_checkpoint=True)
        return self.status()

    def _report_progress(self) -> None:
        """Lag and position per topic, every PROGRESS_EVERY_S."""
        now = self.clock()
        if self.metrics is None or now - self._progress_at < PROGRESS_EVERY_S:
            return
        self._progress_at = now
        report_consumer_progress(
            self.transport, self.metrics, {self.layout.to_aggregator: "to-aggregator"}
        )

    def _dispatch(self, out: list[Outbound], *, force_checkpoint: bool = False) -> None:
        """Checkpoint, then publish: a crash in between re-sends from the checkpoint."""
        orch = self.orchestrator
        if out:
            orch.outbox = out
        if out or force_checkpoint:
            self._checkpoint()
        self._observe()
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                self._publish(out)
                return
            except TransportError as exc:
                # Receivers deduplicate, so publishing the whole batch again is safe.
                log.warning("publishing failed (attempt %d): %s", attempt, exc)
                if self.metrics is not None:
                    self.metrics.kafka_error("send_failed")
                time.sleep(min(5.0, attempt))
        raise TransportError(f"could not publish after {PUBLISH_ATTEMPTS} attempts")

    def _publish(self, out: list[Outbound]) -> None:
        for o in out:
            topic = {
                "control": self.layout.control,
                "models": self.layout.models,
                "inbox": self.layout.inbox(o.recipient) if o.topic == "inbox" else "",
            }[o.topic]
            self.channel.send(
                topic, recipient=o.recipient, round=o.round, stage=o.stage,
                payload_type=o.payload_type, payload=o.payload, seal_to=list(o.seal_to),
            )
            if self.metrics is not None:
                self.metrics.message_sent(len(o.payload))
        if out:
            self.channel.flush()

    def _checkpoint(self) -> None:
        start = time.perf_counter()
        header, blobs = self.orchestrator.to_state()
        blobs["channel"] = self.channel.checkpoint().to_bytes()
        save_checkpoint(self.checkpoint_path, {"orchestrator": header}, blobs)
        if self.metrics is not None:
            self.metrics.checkpoint_written(duration_seconds=time.perf_counter() - start)

    def _observe(self) -> None:
        """Turn the orchestrator's events into the round log, logs and metrics."""
        m, orch = self.metrics, self.orchestrator
        finished_rounds: list[RoundRecord] = []
        for event in orch.drain_events():
            if isinstance(event, RoundCompleted | RoundAborted):
                rec = next((r for r in reversed(orch.history) if r.round == event.round), None)
                if rec is not None:
                    finished_rounds.append(rec)
            if m is not None:
                try:
                    self._count(m, event)
                except ValueError:  # a label outside the metric's closed set: never fatal
                    log.exception("could not count %r", event)
        if finished_rounds:
            with self.round_log.open("a") as fh:
                for rec in finished_rounds:
                    fh.write(json.dumps(rec.to_dict(), sort_keys=True) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        status = self.status()
        self.health.set_state(state=status["state"], finished=orch.finished,
                              run_id=status["run_id"])
        if self.admin is not None:
            self.admin.publish_status(status)
        if orch.finished and not self._finished_logged:
            self._finished_logged = True
            level = logging.INFO if orch.completed >= orch.planned_rounds else logging.ERROR
            log.log(level, "federation finished: %d of %d rounds completed; serving on "
                    "(fraudfl admin extend N continues it)", orch.completed, orch.planned_rounds)
        if m is not None:
            m.set_lifecycle(finished=orch.finished, planned_rounds=orch.planned_rounds)

    @staticmethod
    def _count(m: AggregatorMetrics, event: OrchestratorEvent) -> None:
        if isinstance(event, RoundStarted):
            m.round_started(event.round, selected_banks=len(event.selected), kind=event.kind)
        elif isinstance(event, StageEnded):
            m.stage_completed(
                event.stage,  # type: ignore[arg-type]
                duration_seconds=event.seconds, participants=event.participants,
                dropouts=event.dropouts,
            )
        elif isinstance(event, RoundCompleted):
            m.round_completed(duration_seconds=event.seconds, model_version=event.model_version,
                              kind=event.kind)
            for name, value in event.metrics:
                if name in ("auprc", "roc_auc", "loss"):
                    m.set_model_quality(name, value)  # type: ignore[arg-type]
            if event.federation_epsilon is not None:
                m.set_federation_epsilon(event.federation_epsilon)
        elif isinstance(event, RoundAborted):
            m.round_aborted(event.cause)
        elif isinstance(event, MessageRejected):
            m.message_rejected(event.reason)
