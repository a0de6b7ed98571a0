"""The metrics the fraudfl services export, behind a small typed interface.

Services call methods such as :meth:`AggregatorMetrics.round_completed` and never touch
prometheus-client directly. Conventions (https://prometheus.io/docs/practices/naming/):

- every name starts with ``fraudfl_``; values are in base units (seconds, bytes);
  counters end in ``_total``;
- labels are few and bounded: ``federation`` and ``bank`` are fixed per process and bound at
  construction; ``stage``, ``reason``, ``metric``, ``model``, ``endpoint`` and ``outcome`` take
  values from the closed sets below, so a typo is a mypy error and, at run time, a
  ``ValueError`` rather than a new time series. Message or transaction ids never become labels.
- every labelled child is created up front, so each series exists (at 0) from the first scrape
  and ``rate()``/``increase()`` see the first event.

Each class takes the registry to register on: ``None`` means prometheus-client's process-wide
default registry (which already carries the process, platform and GC collectors); tests and
processes that host several services pass a private one from :func:`new_registry`.
"""

from __future__ import annotations

import hashlib
import math
import time
import weakref
from collections.abc import Iterable, Mapping
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any, Literal, TypeVar, get_args

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.metrics import MetricWrapperBase

from fraudfl.vocabulary import ABORT_REASONS, ROUND_KINDS, STAGES, AbortReason, RoundKind, Stage

# The values of ``fraudfl.transport.errors.RejectReason`` and ``fraudfl.secagg.errors.RejectReason``
# (both StrEnums, so their members can be passed as they are).
REJECT_REASONS: tuple[str, ...] = (
    "malformed",
    "unsupported_version",
    "too_large",
    "corrupt",
    "bad_signature",
    "unknown_sender",
    "wrong_federation",
    "wrong_recipient",
    "wrong_round",
    "wrong_stage",
    "replay",
    "duplicate",
    "wrong_length",
    "impersonation",
    "inconsistent",
    "undecryptable",
    "decryption_failed",
    # A message whose handling raised an unexpected error: counted and skipped so that no
    # single message can stop a service (``fraudfl.isolation``).
    "handler_error",
)
RecoveryOutcome = Literal["resumed", "round_aborted"]
QualityMetric = Literal["auprc", "roc_auc", "loss"]
# Budget and data first, then the consortium policy's refusals (``fraudfl.rounds.policy.Refusal``).
DeclineReason = Literal[
    "privacy_budget",
    "no_data",
    "error",
    "round_not_next",
    "non_bank_participant",
    "too_few_banks",
    "graph_too_sparse",
    "threshold_too_low",
    "setup_mismatch",
    "task_not_allowed",
    "out_of_bounds",
    "stats_already_answered",
    "too_many_rounds",
    "plain_sum",
    "bins_already_answered",
]
KafkaErrorReason = Literal["send_failed", "receive_failed", "connection_lost", "timeout"]
Endpoint = Literal["score", "health", "model", "stream"]
Outcome = Literal["ok", "client_error", "server_error"]
Component = Literal["aggregator", "bank-node", "scoring"]
# The federation's topics a service consumes, by role (a bank's own inbox is "inbox").
ConsumedTopic = Literal["to-aggregator", "control", "models", "inbox"]
# The bank's models compared on its validation split: the federation's and its personalised one.
ModelKind = Literal["global", "personal"]
SkipReason = Literal["privacy_budget"]

RECOVERY_OUTCOMES: tuple[RecoveryOutcome, ...] = get_args(RecoveryOutcome)
QUALITY_METRICS: tuple[QualityMetric, ...] = get_args(QualityMetric)
DECLINE_REASONS: tuple[DeclineReason, ...] = get_args(DeclineReason)
KAFKA_ERROR_REASONS: tuple[KafkaErrorReason, ...] = get_args(KafkaErrorReason)
ENDPOINTS: tuple[Endpoint, ...] = get_args(Endpoint)
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
MODEL_KINDS: tuple[ModelKind, ...] = get_args(ModelKind)
SKIP_REASONS: tuple[SkipReason, ...] = get_args(SkipReason)

# Rounds run from seconds (small models, in-process) to tens of minutes (large banks, DP).
ROUND_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
TRAINING_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
CHECKPOINT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The scoring target is p99 under 5 ms for one transaction: resolve the low milliseconds.
SCORING_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0
)

_K = TypeVar("_K", bound=str)
_C = TypeVar("_C", Counter, Gauge, Histogram)


def new_registry() -> CollectorRegistry:
    """A private registry with the process, platform and GC collectors the default one has."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def config_digest(config_bytes: bytes) -> str:
    """The ``config_hash`` of the build-info metric: short SHA-256 of the config file's bytes."""
    return hashlib.sha256(config_bytes).hexdigest()[:16]


def fraudfl_version() -> str:
    try:
        return package_version("fraudfl")
    except PackageNotFoundError:
        return "unknown"


class _RegistryState:
    """Metric families already created on one registry, and which services registered there."""

    def __init__(self) -> None:
        self.families: dict[str, MetricWrapperBase] = {}
        self.owners: set[tuple[str, ...]] = set()


# Families are shared per registry so that one process may host several services (a bank node
# serving scoring, or tests running two banks): each adds its own children to the same family.
_states: weakref.WeakKeyDictionary[CollectorRegistry, _RegistryState] = (
    weakref.WeakKeyDictionary()
)
_M = TypeVar("_M", bound=MetricWrapperBase)


class _Factory:
    """Creates (or reuses) families on a registry and binds the service's fixed labels."""

    def __init__(
        self, registry: CollectorRegistry, component: Component, fixed: dict[str, str],
        config_hash: str,
    ) -> None:
        self.registry = registry
        self.fixed = fixed
        self.base = tuple(fixed)
        self._state = _states.setdefault(registry, _RegistryState())
        owner = (component, *fixed.values())
        if owner in self._state.owners:
            raise ValueError(
                f"{component} metrics for {', '.join(f'{k}={v}' for k, v in fixed.items())} "
                "are already registered on this registry"
            )
        self._state.owners.add(owner)
        info = self.family(
            Info, "fraudfl_build",
            "fraudfl version and configuration of this process (value always 1)",
            ("federation", "bank", "component"),
        )
        info.labels(fixed["federation"], fixed.get("bank", ""), component).info(
            {"version": fraudfl_version(), "config_hash": config_hash}
        )

    def family(
        self, kind: type[_M], name: str, doc: str, labelnames: tuple[str, ...], **kwargs: Any
    ) -> _M:
        existing = self._state.families.get(name)
        if existing is None:
            existing = kind(name, doc, labelnames, registry=self.registry, **kwargs)
            self._state.families[name] = existing
        assert isinstance(existing, kind)
        return existing

    def one(self, kind: type[_C], name: str, doc: str, **kwargs: Any) -> _C:
        return self.family(kind, name, doc, self.base, **kwargs).labels(**self.fixed)

    def each(
        self, kind: type[_C], name: str, doc: str, label: str, keys: Iterable[_K], **kwargs: Any
    ) -> dict[_K, _C]:
        parent = self.family(kind, name, doc, (*self.base, label), **kwargs)
        return {key: parent.labels(**self.fixed, **{label: key}) for key in keys}


def _pick(children: Mapping[_K, _C], key: _K, what: str) -> _C:
    try:
        return children[key]
    except KeyError:
        raise ValueError(
            f"unknown {what} {key!r}; expected one of {', '.join(sorted(children))}"
        ) from None


def _count(value: float, what: str) -> float:
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")
    return value


class _Connectivity:
    """Broker connectivity and consumer progress; the same families for every Kafka service."""

    def __init__(self, f: _Factory, prefix: str, topics: tuple[ConsumedTopic, ...]) -> None:
        self._broker_up = f.one(
            Gauge, f"{prefix}_broker_up",
            "1 when the latest broker check (the probe's metadata request, or the main loop's "
            "poll where no probe runs) succeeded, else 0.",
        )
        self._position = f.each(
            Gauge, f"{prefix}_consumer_position",
            "Offset of the next record the service will read, summed over a topic's "
            "partitions.", "topic", topics,
        )
        self._lag = f.each(
            Gauge, f"{prefix}_consumer_lag_records",
            "Records in a topic not yet read by the service (high watermark - position).",
            "topic", topics,
        )

    def set_broker_up(self, up: bool) -> None:
        self._broker_up.set(1 if up else 0)

    def set_consumer_progress(self, topic: ConsumedTopic, *, position: int, lag: int) -> None:
        _pick(self._position, topic, "consumed topic").set(_count(position, "position"))
        _pick(self._lag, topic, "consumed topic").set(_count(lag, "lag"))


class AggregatorMetrics(_Connectivity):
    """Metrics of the aggregator: rounds, secure-aggregation stages, traffic, checkpoints."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        federation: str,
        config_hash: str = "",
    ) -> None:
        self.registry = REGISTRY if registry is None else registry
        f = _Factory(self.registry, "aggregator", {"federation": federation}, config_hash)
        super().__init__(f, "fraudfl_aggregator", ("to-aggregator",))
        self._finished = f.one(
            Gauge, "fraudfl_aggregator_finished",
            "1 when the planned rounds are done and the aggregator waits for an extension "
            "(fraudfl admin extend), else 0.",
        )
        self._planned_rounds = f.one(
            Gauge, "fraudfl_aggregator_planned_rounds",
            "Training rounds planned for the federation, extensions included.",
        )
        self._last_round_completed = f.one(
            Gauge, "fraudfl_aggregator_last_round_completed_timestamp_seconds",
            "Unix time at which the latest round completed (0 before the first).",
        )
        self._rounds_started = f.each(
            Counter, "fraudfl_aggregator_rounds_started_total",
            "Rounds announced, by kind (stats: the feature-statistics round 0; train).",
            "kind", ROUND_KINDS,
        )
        self._rounds_completed = f.each(
            Counter, "fraudfl_aggregator_rounds_completed_total",
            "Rounds that produced a new global model, by kind (stats: the feature-statistics "
            "round 0, which publishes model version 0; train).",
            "kind", ROUND_KINDS,
        )
        self._rounds_aborted = f.each(
            Counter, "fraudfl_aggregator_rounds_aborted_total",
            "Rounds abandoned without a new model, by reason.", "reason", ABORT_REASONS,
        )
        self._round_duration = f.one(
            Histogram, "fraudfl_aggregator_round_duration_seconds",
            "Wall time from round announcement to the new global model.",
            buckets=ROUND_BUCKETS,
        )
        self._banks_selected = f.one(
            Counter, "fraudfl_aggregator_banks_selected_total",
            "Banks selected into rounds, summed over rounds (denominator of the dropout ratio).",
        )
        self._stage_duration = f.each(
            Histogram, "fraudfl_aggregator_secagg_stage_duration_seconds",
            "Duration of each aggregation stage on the aggregator.", "stage", STAGES,
            buckets=STAGE_BUCKETS,
        )
        self._stage_participants = f.each(
            Gauge, "fraudfl_aggregator_stage_participants",
            "Banks that completed the stage in the latest round that reached it.",
            "stage", STAGES,
        )
        self._dropouts = f.each(
            Counter, "fraudfl_aggregator_dropouts_total",
            "Banks that were expected in a stage and did not complete it.", "stage", STAGES,
        )
        self._current_round = f.one(
            Gauge, "fraudfl_aggregator_current_round",
            "Number of the round in progress or last run.",
        )
        self._model_version = f.one(
            Gauge, "fraudfl_aggregator_model_version",
            "Version of the latest published global model.",
        )
        self._received_bytes = f.one(
            Counter, "fraudfl_aggregator_received_bytes_total", "Bytes of Kafka records consumed."
        )
        self._sent_bytes = f.one(
            Counter, "fraudfl_aggregator_sent_bytes_total", "Bytes of Kafka records produced."
        )
        self._messages_received = f.one(
            Counter, "fraudfl_aggregator_messages_received_total", "Kafka records consumed."
        )
        self._messages_sent = f.one(
            Counter, "fraudfl_aggregator_messages_sent_total", "Kafka records produced."
        )
        self._rejected = f.each(
            Counter, "fraudfl_aggregator_messages_rejected_total",
            "Inbound messages dropped before acting on them, by reason.",
            "reason", REJECT_REASONS,
        )
        self._kafka_errors = f.each(
            Counter, "fraudfl_aggregator_kafka_errors_total", "Kafka client errors, by reason.",
            "reason", KAFKA_ERROR_REASONS,
        )
        self._checkpoint_writes = f.one(
            Counter, "fraudfl_aggregator_checkpoint_writes_total",
            "Checkpoints written (atomically).",
        )
        self._checkpoint_duration = f.one(
            Histogram, "fraudfl_aggregator_checkpoint_write_duration_seconds",
            "Time to write one checkpoint including fsync.", buckets=CHECKPOINT_BUCKETS,
        )
        self._recoveries = f.each(
            Counter, "fraudfl_aggregator_recoveries_total",
            "Restarts from a checkpoint, by what happened to the round in progress.",
            "outcome", RECOVERY_OUTCOMES,
        )
        self._quality = f.each(
            Gauge, "fraudfl_aggregator_global_model_quality",
            "Quality of the latest global model on the aggregator's held-out set.",
            "metric", QUALITY_METRICS,
        )
        self._federation_epsilon = f.one(
            Gauge, "fraudfl_aggregator_federation_epsilon",
            "Federation-level (bank-level DP) epsilon published with the latest model; "
            "NaN while no model carries a bank-level DP guarantee.",
        )
        # 0 would read as perfect privacy when bank-level DP is off; NaN says "no guarantee".
        self._federation_epsilon.set(math.nan)

    def round_started(self, round_number: int, *, selected_banks: int, kind: RoundKind) -> None:
        _pick(self._rounds_started, kind, "round kind").inc()
        self._current_round.set(round_number)
        self._banks_selected.inc(_count(selected_banks, "selected_banks"))

    def round_completed(
        self, *, duration_seconds: float, model_version: int, kind: RoundKind
    ) -> None:
        _pick(self._rounds_completed, kind, "round kind").inc()
        self._round_duration.observe(_count(duration_seconds, "duration_seconds"))
        self._model_version.set(model_version)
        self._last_round_completed.set(time.time())

    def set_lifecycle(self, *, finished: bool, planned_rounds: int) -> None:
        self._finished.set(1 if finished else 0)
        self._planned_rounds.set(_count(planned_rounds, "planned_rounds"))

    def round_aborted(self, reason: AbortReason) -> None:
        _pick(self._rounds_aborted, reason, "abort reason").inc()

    def stage_completed(
        self, stage: Stage, *, duration_seconds: float, participants: int, dropouts: int
    ) -> None:
        """A stage ended: ``participants`` banks completed it, ``dropouts`` did not."""
        _pick(self._stage_duration, stage, "stage").observe(
            _count(duration_seconds, "duration_seconds")
        )
        self._stage_participants[stage].set(_count(participants, "participants"))
        self._dropouts[stage].inc(_count(dropouts, "dropouts"))

    def message_received(self, nbytes: int) -> None:
        self._messages_received.inc()
        self._received_bytes.inc(_count(nbytes, "nbytes"))

    def message_sent(self, nbytes: int) -> None:
        self._messages_sent.inc()
        self._sent_bytes.inc(_count(nbytes, "nbytes"))

    def message_rejected(self, reason: str) -> None:
        _pick(self._rejected, reason, "reject reason").inc()

    def kafka_error(self, reason: KafkaErrorReason) -> None:
        _pick(self._kafka_errors, reason, "Kafka error reason").inc()

    def checkpoint_written(self, *, duration_seconds: float) -> None:
        self._checkpoint_writes.inc()
        self._checkpoint_duration.observe(_count(duration_seconds, "duration_seconds"))

    def recovered(self, outcome: RecoveryOutcome) -> None:
        _pick(self._recoveries, outcome, "recovery outcome").inc()

    def set_model_quality(self, metric: QualityMetric, value: float) -> None:
        _pick(self._quality, metric, "quality metric").set(value)

    def set_federation_epsilon(self, epsilon: float) -> None:
        self._federation_epsilon.set(_count(epsilon, "epsilon"))


class BankMetrics(_Connectivity):
    """Metrics of one bank node: local training, privacy spending, protocol and Kafka traffic."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        federation: str,
        bank: str,
        config_hash: str = "",
    ) -> None:
        self.registry = REGISTRY if registry is None else registry
        f = _Factory(
            self.registry, "bank-node", {"federation": federation, "bank": bank}, config_hash
        )
        super().__init__(f, "fraudfl_bank", ("control", "models", "inbox"))
        self._run_refused = f.one(
            Gauge, "fraudfl_bank_run_refused",
            "1 while the bank refuses a new run of its federation (it holds state of an "
            "earlier run; see docs/operations.md), else 0.",
        )
        self._last_round = f.one(
            Gauge, "fraudfl_bank_last_round_timestamp_seconds",
            "Unix time at which the bank last answered or declined a round (0 before).",
        )
        self._training_duration = f.one(
            Histogram, "fraudfl_bank_training_duration_seconds", "Local training time per round.",
            buckets=TRAINING_BUCKETS,
        )
        self._examples = f.one(
            Counter, "fraudfl_bank_training_examples_total",
            "Training examples processed (summed over local epochs).",
        )
        self._training_loss = f.one(
            Gauge, "fraudfl_bank_training_loss", "Mean training loss of the latest local training."
        )
        self._validation = f.each(
            Gauge, "fraudfl_bank_validation_quality",
            "Quality of the model in use on the bank's own validation split.",
            "metric", QUALITY_METRICS,
        )
        self._epsilon_spent = f.one(
            Gauge, "fraudfl_bank_privacy_epsilon_spent",
            "Record-level epsilon spent so far (at the configured delta).",
        )
        self._epsilon_budget = f.one(
            Gauge, "fraudfl_bank_privacy_epsilon_budget", "Record-level epsilon budget."
        )
        self._epsilon_remaining = f.one(
            Gauge, "fraudfl_bank_privacy_epsilon_remaining",
            "Record-level epsilon left in the budget (never below 0).",
        )
        self._delta = f.one(
            Gauge, "fraudfl_bank_privacy_delta", "Delta the epsilon figures refer to."
        )
        self._federation_epsilon = f.one(
            Gauge, "fraudfl_bank_federation_epsilon",
            "Federation-level epsilon of the latest global model received; "
            "NaN while no model carries a bank-level DP guarantee.",
        )
        self._federation_epsilon.set(math.nan)
        self._rounds_joined = f.each(
            Counter, "fraudfl_bank_rounds_joined_total",
            "Rounds this bank sent its (masked) vector to, by kind (stats: its feature "
            "statistics in round 0; train: a model update).",
            "kind", ROUND_KINDS,
        )
        self._rounds_declined = f.each(
            Counter, "fraudfl_bank_rounds_declined_total",
            "Round invitations declined, by reason.", "reason", DECLINE_REASONS,
        )
        self._stage_duration = f.each(
            Histogram, "fraudfl_bank_secagg_stage_duration_seconds",
            "Duration of each aggregation stage on the bank (client side).", "stage", STAGES,
            buckets=STAGE_BUCKETS,
        )
        self._sent_bytes = f.one(
            Counter, "fraudfl_bank_kafka_sent_bytes_total", "Bytes of Kafka records produced."
        )
        self._received_bytes = f.one(
            Counter, "fraudfl_bank_kafka_received_bytes_total", "Bytes of Kafka records consumed."
        )
        self._kafka_errors = f.each(
            Counter, "fraudfl_bank_kafka_errors_total", "Kafka client errors, by reason.",
            "reason", KAFKA_ERROR_REASONS,
        )
        self._rejected = f.each(
            Counter, "fraudfl_bank_messages_rejected_total",
            "Inbound messages dropped before acting on them, by reason.",
            "reason", REJECT_REASONS,
        )
        self._model_version = f.one(
            Gauge, "fraudfl_bank_model_version", "Version of the global model the bank is using."
        )
        quality = f.family(
            Gauge, "fraudfl_bank_model_quality",
            "Quality of the global and of the bank's personalised model on its validation split.",
            (*f.base, "model", "metric"),
        )
        self._model_quality = {
            (kind, metric): quality.labels(**f.fixed, model=kind, metric=metric)
            for kind in MODEL_KINDS
            for metric in QUALITY_METRICS
        }
        self._personalization_skipped = f.each(
            Counter, "fraudfl_bank_personalization_skipped_total",
            "New global models served without personalisation, by reason.", "reason",
            SKIP_REASONS,
        )

    def training_completed(self, *, duration_seconds: float, examples: int, loss: float) -> None:
        self._training_duration.observe(_count(duration_seconds, "duration_seconds"))
        self._examples.inc(_count(examples, "examples"))
        self._training_loss.set(loss)

    def set_validation_quality(self, metric: QualityMetric, value: float) -> None:
        _pick(self._validation, metric, "quality metric").set(value)

    def set_privacy(self, *, epsilon_spent: float, epsilon_budget: float, delta: float) -> None:
        """The accountant's state after a round (or at start-up, from the saved state)."""
        self._epsilon_spent.set(_count(epsilon_spent, "epsilon_spent"))
        self._epsilon_budget.set(_count(epsilon_budget, "epsilon_budget"))
        self._epsilon_remaining.set(max(epsilon_budget - epsilon_spent, 0.0))
        self._delta.set(_count(delta, "delta"))

    def set_federation_epsilon(self, epsilon: float) -> None:
        self._federation_epsilon.set(_count(epsilon, "epsilon"))

    def round_joined(self, kind: RoundKind) -> None:
        _pick(self._rounds_joined, kind, "round kind").inc()
        self._last_round.set(time.time())

    def set_run_refused(self, refused: bool) -> None:
        self._run_refused.set(1 if refused else 0)

    def round_declined(self, reason: DeclineReason) -> None:
        _pick(self._rounds_declined, reason, "decline reason").inc()
        self._last_round.set(time.time())

    def stage_completed(self, stage: Stage, *, duration_seconds: float) -> None:
        _pick(self._stage_duration, stage, "stage").observe(
            _count(duration_seconds, "duration_seconds")
        )

    def message_sent(self, nbytes: int) -> None:
        self._sent_bytes.inc(_count(nbytes, "nbytes"))

    def message_received(self, nbytes: int) -> None:
        self._received_bytes.inc(_count(nbytes, "nbytes"))

    def kafka_error(self, reason: KafkaErrorReason) -> None:
        _pick(self._kafka_errors, reason, "Kafka error reason").inc()

    def message_rejected(self, reason: str) -> None:
        _pick(self._rejected, reason, "reject reason").inc()

    def set_model_version(self, version: int) -> None:
        self._model_version.set(version)

    def set_model_quality(self, model: ModelKind, metric: QualityMetric, value: float) -> None:
        gauge = self._model_quality.get((model, metric))
        if gauge is None:
            raise ValueError(f"unknown model/metric {model!r}/{metric!r}; expected model in "
                             f"{', '.join(MODEL_KINDS)} and metric in {', '.join(QUALITY_METRICS)}")
        gauge.set(value)

    def personalization_skipped(self, reason: SkipReason) -> None:
        _pick(self._personalization_skipped, reason, "skip reason").inc()


class ScoringMetrics:
    """Metrics of a bank's scoring service (HTTP API and streaming scorer)."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        federation: str,
        bank: str,
        config_hash: str = "",
    ) -> None:
        self.registry = REGISTRY if registry is None else registry
        fixed = {"federation": federation, "bank": bank}
        f = _Factory(self.registry, "scoring", fixed, config_hash)
        requests = f.family(
            Counter, "fraudfl_scoring_requests_total", "Scoring requests, by endpoint and outcome.",
            (*f.base, "endpoint", "outcome"),
        )
        self._requests = {
            (endpoint, outcome): requests.labels(**fixed, endpoint=endpoint, outcome=outcome)
            for endpoint in ENDPOINTS
            for outcome in OUTCOMES
        }
        self._latency = f.each(
            Histogram, "fraudfl_scoring_request_duration_seconds",
            "Time to answer a scoring request (a batch counts once).", "endpoint", ENDPOINTS,
            buckets=SCORING_BUCKETS,
        )
        self._transactions = f.one(
            Counter, "fraudfl_scoring_transactions_total", "Transactions scored."
        )
        self._alerts = f.one(
            Counter, "fraudfl_scoring_fraud_alerts_total",
            "Transactions whose score crossed the decision threshold.",
        )
        self._model_version = f.one(
            Gauge, "fraudfl_scoring_model_version", "Version of the model currently serving."
        )
        self._model_swaps = f.one(
            Counter, "fraudfl_scoring_model_swaps_total", "Hot swaps to a newer model."
        )
        self._model_loaded_at = f.one(
            Gauge, "fraudfl_scoring_model_loaded_timestamp_seconds",
            "Unix time the serving model was loaded.",
        )

    def request_finished(
        self,
        endpoint: Endpoint,
        outcome: Outcome,
        *,
        duration_seconds: float,
        transactions: int = 0,
        alerts: int = 0,
    ) -> None:
        """One request answered; ``transactions`` scored in it, ``alerts`` of them flagged."""
        if alerts > transactions:
            raise ValueError(f"alerts ({alerts}) cannot exceed transactions ({transactions})")
        counter = self._requests.get((endpoint, outcome))
        if counter is None:
            raise ValueError(
                f"unknown endpoint/outcome {endpoint!r}/{outcome!r}; expected endpoint in "
                f"{', '.join(ENDPOINTS)} and outcome in {', '.join(OUTCOMES)}"
            )
        counter.inc()
        self._latency[endpoint].observe(_count(duration_seconds, "duration_seconds"))
        self._transactions.inc(_count(transactions, "transactions"))
        self._alerts.inc(_count(alerts, "alerts"))

    def model_loaded(self, version: int, *, swapped: bool) -> None:
        """A model started serving; ``swapped`` when it replaced one (a hot swap)."""
        self._model_version.set(version)
        self._model_loaded_at.set(time.time())
        if swapped:
            self._model_swaps.inc()
