"""The aggregator process: the round orchestrator wired to Kafka, checkpoints and metrics.

The loop polls the aggregator's inbound topic, feeds every verified message to the
:class:`~fraudfl.rounds.orchestrator.Orchestrator`, and calls its timeout when a stage's deadline
passes. Whenever an event produces messages, the service first writes a checkpoint (orchestrator
state, the messages to send, channel offsets and seen message ids; one atomic file) and only
then publishes them. After a crash it loads that checkpoint, re-reads from the saved offsets
(already-seen message ids are dropped) and re-sends the last messages; every receiver
deduplicates, so the round continues where it was, nothing is lost and no round is counted
twice.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import numpy.typing as npt

from fraudfl.checkpoint import load_checkpoint, save_checkpoint
from fraudfl.config import AggregatorConfig
from fraudfl.data.loading import load_bank_file
from fraudfl.data.pipeline import FeaturePipeline
from fraudfl.data.schema import Schema, load_schema
from fraudfl.data.validation import IntArray
from fraudfl.identity import Allowlist, Identity
from fraudfl.isolation import isolated
from fraudfl.models import ModelSpec, set_flat_params
from fraudfl.monitoring import AggregatorMetrics
from fraudfl.rounds.orchestrator import STAGE_LABELS, Orchestrator, Outbound, RoundRecord
from fraudfl.training.evaluation import evaluate
from fraudfl.transport.base import Transport
from fraudfl.transport.channel import Channel, ChannelState
from fraudfl.transport.errors import RejectReason, TransportError
from fraudfl.transport.sealing import EncryptionKey
from fraudfl.transport.topics import TopicLayout

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "aggregator.ckpt"
ROUND_LOG_FILE = "rounds.jsonl"
POLL_S = 0.2
PUBLISH_ATTEMPTS = 30


class AggregatorService:
    """One aggregator; ``run()`` returns when the configured rounds are done or on ``stop``."""

    def __init__(
        self,
        config: AggregatorConfig,
        transport: Transport,
        *,
        metrics: AggregatorMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.transport = transport
        self.metrics = metrics
        self.clock = clock
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
        self._stage_key: tuple[int, str] = (-1, "")
        self._stage_since = 0.0
        self._stage_dropouts = 0
        self._history_seen = 0

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
        orch = self.orchestrator
        saved = load_checkpoint(self.checkpoint_path)
        if saved is None:
            # A new federation: records left in its topics by an earlier run (same ids, same
            # keys) would otherwise be read as this run's, so the topics start empty.
            deleted = self.layout.delete(self.transport)
            if deleted:
                log.warning("fresh start: deleted %d topics of an earlier run", len(deleted))
        self.layout.create(self.transport, orch.banks)
        self.channel.listen([self.layout.to_aggregator])
        now = self.clock()
        if saved is None:
            log.info("starting federation %s with banks %s", self.config.federation_id,
                     orch.banks)
            out = orch.start(now)
        else:
            header, blobs = saved
            orch.load_state(header["orchestrator"], blobs)
            self.channel.restore(ChannelState.from_bytes(blobs["channel"]))
            resumed = orch.server is not None
            log.warning(
                "restarted from checkpoint: round %d, stage %s, %d rounds completed (%s)",
                orch.round, orch.stage, orch.completed,
                "resuming the round" if resumed else "the round in progress was aborted",
            )
            if self.metrics is not None:
                self.metrics.recovered("resumed" if resumed else "round_aborted")
            self._history_seen = len(orch.history)
            out = orch.restart(now)
        self._dispatch(out, force_checkpoint=True)
        while not orch.finished:
            if stop is not None and stop.is_set():
                log.info("stopping on request at round %d, stage %s", orch.round, orch.stage)
                return 0
            deadline = orch.deadline()
            wait = POLL_S if deadline is None else min(POLL_S, max(0.0, deadline - self.clock()))
            batch: list[Outbound] = []
            try:
                messages = self.channel.receive(wait)
            except TransportError as exc:
                log.warning("receive failed (%s); retrying", exc)
                if self.metrics is not None:
                    self.metrics.kafka_error("receive_failed")
                time.sleep(POLL_S)
                continue
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
        if orch.completed < self.config.rounds.rounds:
            log.error("federation stopped after %d of %d rounds", orch.completed,
                      self.config.rounds.rounds)
            return 1
        log.info("federation finished: %d rounds completed", orch.completed)
        return 0

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
        """Record finished rounds in the round log and translate state changes into metrics."""
        m, orch = self.metrics, self.orchestrator
        new = orch.history[self._history_seen:]
        if new:
            with self.round_log.open("a") as fh:
                for rec in new:
                    fh.write(json.dumps(rec.to_dict(), sort_keys=True) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        if m is None:
            self._history_seen = len(orch.history)
            return
        key = (orch.round, orch.stage)
        if key != self._stage_key:
            self._stage_ended(m, new)
            if orch.current is not None and key[0] != self._stage_key[0]:
                m.round_started(orch.round, selected_banks=len(orch.current.selected),
                                kind=orch.current.kind)
            self._stage_key = key
            self._stage_since = self.clock()
            self._stage_dropouts = 0 if orch.current is None else len(orch.current.dropouts)
        for rec in new:
            if rec.status == "completed" and rec.model_version is not None:
                m.round_completed(duration_seconds=rec.finished_at - rec.started_at,
                                  model_version=rec.model_version, kind=rec.kind)
                for name in ("auprc", "roc_auc", "loss"):
                    if name in rec.metrics:
                        m.set_model_quality(name, rec.metrics[name])  # type: ignore[arg-type]
                if rec.federation_epsilon is not None:
                    m.set_federation_epsilon(rec.federation_epsilon)
            elif rec.status == "aborted":
                m.round_aborted(rec.cause or "internal_error")
        self._history_seen = len(orch.history)

    def _stage_ended(self, m: AggregatorMetrics, finished: list[RoundRecord]) -> None:
        """Metrics of the stage that just closed (its round may have just finished, too)."""
        round_number, stage = self._stage_key
        if stage not in STAGE_LABELS.values():
            return
        current = self.orchestrator.current
        rec = current if current is not None and current.round == round_number else next(
            (r for r in finished if r.round == round_number), None
        )
        if rec is None:
            return
        out = len(rec.dropouts) + len(rec.declined)
        m.stage_completed(
            stage,  # type: ignore[arg-type]
            duration_seconds=max(0.0, self.clock() - self._stage_since),
            participants=max(0, len(rec.selected) - out),
            dropouts=max(0, len(rec.dropouts) - self._stage_dropouts),
        )
