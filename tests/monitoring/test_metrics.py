"""Metric definitions: naming conventions, bounded labels, and what each method records."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fraudfl.monitoring import AggregatorMetrics, BankMetrics, ScoringMetrics, config_digest
from fraudfl.monitoring.metrics import REJECT_REASONS
from fraudfl.vocabulary import STAGES
from tests.monitoring.metrics_samples import BANKS, FEDERATION, record_sample_observations

ALLOWED_LABELS = {
    "federation", "bank", "stage", "reason", "metric", "model", "endpoint", "outcome", "kind",
    "topic",
}
BUILD_INFO_LABELS = {"federation", "bank", "component", "version", "config_hash"}
UNITS = ("_seconds", "_bytes")


def families(registry: CollectorRegistry) -> list:  # type: ignore[type-arg]
    return list(text_string_to_metric_families(generate_latest(registry).decode()))


def series(registry: CollectorRegistry) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {
        (s.name, tuple(sorted(s.labels.items())))
        for f in families(registry)
        for s in f.samples
    }


def test_names_types_and_labels_follow_conventions(exercised_registry: CollectorRegistry) -> None:
    fams = families(exercised_registry)
    # prometheus-client exposes each counter's and histogram's creation time as a separate
    # ``<name>_created`` gauge family; those follow from the family they belong to.
    created = {f.name + "_created" for f in fams if f.type in ("counter", "histogram")}
    ours = [f for f in fams if f.name.startswith("fraudfl_") and f.name not in created]
    assert len(ours) >= 45
    # Only the default collectors' families are not ours.
    others = {f.name.split("_")[0] for f in fams if not f.name.startswith("fraudfl_")}
    assert others <= {"process", "python"}
    for fam in ours:
        sample_names = {s.name for s in fam.samples}
        assert fam.documentation, fam.name
        if fam.type == "counter":
            assert sample_names <= {fam.name + "_total", fam.name + "_created"}, fam.name
            assert any(name.endswith("_total") for name in sample_names), fam.name
        elif fam.type == "histogram":
            assert fam.name.endswith(UNITS), f"{fam.name}: histogram without a base unit"
        else:
            # The text format has no info type: build info is a gauge fixed at 1.
            assert fam.type == "gauge", fam.name
            assert not fam.name.endswith("_total"), fam.name
            if "time" in fam.name:
                assert fam.name.endswith("_timestamp_seconds"), fam.name
        is_info = fam.name == "fraudfl_build_info"
        for sample in fam.samples:
            allowed = BUILD_INFO_LABELS if is_info else ALLOWED_LABELS | {"le"}
            assert set(sample.labels) <= allowed, (sample.name, sample.labels)
            assert "federation" in sample.labels, sample.name
        if "bytes" in fam.name:
            assert fam.name.endswith("_bytes"), fam.name


def test_every_series_exists_before_any_event_and_use_adds_none() -> None:
    unused = CollectorRegistry()
    AggregatorMetrics(unused, federation=FEDERATION)
    for bank in BANKS:
        BankMetrics(unused, federation=FEDERATION, bank=bank)
        ScoringMetrics(unused, federation=FEDERATION, bank=bank)
    before = series(unused)
    stage_children = {
        dict(labels)["stage"]
        for name, labels in before
        if name == "fraudfl_aggregator_dropouts_total"
    }
    assert stage_children == set(STAGES)

    used = CollectorRegistry()
    record_sample_observations(used)
    # Recording events never creates a series (bounded cardinality): it only moves values.
    # Build info differs only in its config_hash label value.
    def without_info(s: set[tuple[str, tuple[tuple[str, str], ...]]]) -> set[object]:
        return {x for x in s if x[0] != "fraudfl_build_info"}

    assert without_info(series(used)) == without_info(before)
    assert len(before) > 500


def test_aggregator_round_lifecycle_values(registry: CollectorRegistry) -> None:
    m = AggregatorMetrics(registry, federation="f1", config_hash="abc")
    f = {"federation": "f1"}
    m.round_started(7, selected_banks=5, kind="train")
    m.stage_completed("masked_input", duration_seconds=2.0, participants=4, dropouts=1)
    m.round_completed(duration_seconds=12.0, model_version=7, kind="train")
    m.round_aborted("timeout")
    m.message_received(100)
    m.message_received(50)
    m.message_sent(10)
    m.message_rejected("bad_signature")
    m.checkpoint_written(duration_seconds=0.01)
    m.recovered("round_aborted")
    m.set_model_quality("auprc", 0.42)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {**f, **labels})

    assert value("fraudfl_aggregator_rounds_started_total", kind="train") == 1
    assert value("fraudfl_aggregator_rounds_started_total", kind="stats") == 0
    assert value("fraudfl_aggregator_current_round") == 7
    assert value("fraudfl_aggregator_banks_selected_total") == 5
    assert value("fraudfl_aggregator_stage_participants", stage="masked_input") == 4
    assert value("fraudfl_aggregator_dropouts_total", stage="masked_input") == 1
    assert value("fraudfl_aggregator_dropouts_total", stage="share_keys") == 0
    assert value("fraudfl_aggregator_secagg_stage_duration_seconds_sum", stage="masked_input") == 2
    assert value("fraudfl_aggregator_rounds_completed_total", kind="train") == 1
    assert value("fraudfl_aggregator_rounds_completed_total", kind="stats") == 0
    assert value("fraudfl_aggregator_round_duration_seconds_bucket", le="10.0") == 0
    assert value("fraudfl_aggregator_round_duration_seconds_bucket", le="30.0") == 1
    assert value("fraudfl_aggregator_model_version") == 7
    assert value("fraudfl_aggregator_rounds_aborted_total", reason="timeout") == 1
    assert value("fraudfl_aggregator_rounds_aborted_total", reason="below_threshold") == 0
    assert value("fraudfl_aggregator_received_bytes_total") == 150
    assert value("fraudfl_aggregator_messages_received_total") == 2
    assert value("fraudfl_aggregator_sent_bytes_total") == 10
    assert value("fraudfl_aggregator_messages_rejected_total", reason="bad_signature") == 1
    assert value("fraudfl_aggregator_checkpoint_writes_total") == 1
    assert value("fraudfl_aggregator_recoveries_total", outcome="round_aborted") == 1
    assert value("fraudfl_aggregator_global_model_quality", metric="auprc") == pytest.approx(0.42)
    info = [
        s.labels
        for fam in families(registry)
        if fam.name == "fraudfl_build_info"
        for s in fam.samples
    ]
    assert info == [{**f, "bank": "", "component": "aggregator", "config_hash": "abc",
                     "version": info[0]["version"]}]


def test_bank_privacy_gauges_and_remaining_never_negative(registry: CollectorRegistry) -> None:
    m = BankMetrics(registry, federation="f1", bank="b1")
    fb = {"federation": "f1", "bank": "b1"}
    m.set_privacy(epsilon_spent=6.5, epsilon_budget=8.0, delta=1e-5)
    assert registry.get_sample_value("fraudfl_bank_privacy_epsilon_remaining", fb) == 1.5
    assert registry.get_sample_value("fraudfl_bank_privacy_epsilon_budget", fb) == 8.0
    m.set_privacy(epsilon_spent=8.3, epsilon_budget=8.0, delta=1e-5)
    assert registry.get_sample_value("fraudfl_bank_privacy_epsilon_remaining", fb) == 0.0
    assert registry.get_sample_value("fraudfl_bank_privacy_epsilon_spent", fb) == 8.3
    m.round_declined("privacy_budget")
    assert registry.get_sample_value(
        "fraudfl_bank_rounds_declined_total", {**fb, "reason": "privacy_budget"}
    ) == 1
    m.training_completed(duration_seconds=3.0, examples=2048, loss=0.2)
    m.training_completed(duration_seconds=3.0, examples=1024, loss=0.1)
    assert registry.get_sample_value("fraudfl_bank_training_examples_total", fb) == 3072
    assert registry.get_sample_value("fraudfl_bank_training_loss", fb) == 0.1
    assert registry.get_sample_value("fraudfl_bank_training_duration_seconds_count", fb) == 2


def test_scoring_counts_transactions_alerts_and_swaps(registry: CollectorRegistry) -> None:
    m = ScoringMetrics(registry, federation="f1", bank="b1")
    fb = {"federation": "f1", "bank": "b1"}
    m.model_loaded(3, swapped=False)
    m.model_loaded(4, swapped=True)
    m.request_finished("score", "ok", duration_seconds=0.0015, transactions=500, alerts=3)
    m.request_finished("score", "client_error", duration_seconds=0.0001)
    assert registry.get_sample_value(
        "fraudfl_scoring_requests_total", {**fb, "endpoint": "score", "outcome": "ok"}
    ) == 1
    assert registry.get_sample_value("fraudfl_scoring_transactions_total", fb) == 500
    assert registry.get_sample_value("fraudfl_scoring_fraud_alerts_total", fb) == 3
    assert registry.get_sample_value("fraudfl_scoring_model_version", fb) == 4
    assert registry.get_sample_value("fraudfl_scoring_model_swaps_total", fb) == 1
    bucket = {**fb, "endpoint": "score", "le": "0.002"}
    assert registry.get_sample_value("fraudfl_scoring_request_duration_seconds_bucket", bucket) == 2
    with pytest.raises(ValueError, match="alerts"):
        m.request_finished("score", "ok", duration_seconds=0.001, transactions=1, alerts=2)


def test_unknown_label_values_and_negative_amounts_are_refused(registry: CollectorRegistry) -> None:
    agg = AggregatorMetrics(registry, federation="f1")
    bank = BankMetrics(registry, federation="f1", bank="b1")
    scoring = ScoringMetrics(registry, federation="f1", bank="b1")
    with pytest.raises(ValueError, match="unknown stage 'stage-9'"):
        agg.stage_completed("stage-9", duration_seconds=1, participants=1, dropouts=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reject reason"):
        agg.message_rejected("message-id-1234")
    with pytest.raises(ValueError, match="decline reason"):
        bank.round_declined("bored")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="endpoint/outcome"):
        scoring.request_finished("/admin", "ok", duration_seconds=0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nbytes"):
        agg.message_sent(-1)
    with pytest.raises(ValueError, match="duration_seconds"):
        bank.training_completed(duration_seconds=-0.5, examples=1, loss=0.0)
    before = series(registry)
    assert series(registry) == before


def test_reject_reasons_cover_the_transport_and_secagg_enums() -> None:
    from fraudfl.secagg.errors import RejectReason as SecAggReason
    from fraudfl.transport.errors import RejectReason as TransportReason

    assert {r.value for r in TransportReason} | {r.value for r in SecAggReason} <= set(
        REJECT_REASONS
    )
    registry = CollectorRegistry()
    m = AggregatorMetrics(registry, federation="f1")
    m.message_rejected(TransportReason.REPLAY)
    assert registry.get_sample_value(
        "fraudfl_aggregator_messages_rejected_total", {"federation": "f1", "reason": "replay"}
    ) == 1


def test_private_registries_are_independent_and_default_collectors_present() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    AggregatorMetrics(first, federation="f1").round_started(1, selected_banks=2, kind="train")
    AggregatorMetrics(second, federation="f1")
    f = {"federation": "f1", "kind": "train"}
    assert first.get_sample_value("fraudfl_aggregator_rounds_started_total", f) == 1
    assert second.get_sample_value("fraudfl_aggregator_rounds_started_total", f) == 0
    with pytest.raises(ValueError, match="already registered"):
        AggregatorMetrics(first, federation="f1")


def test_new_registry_has_process_metrics(registry: CollectorRegistry) -> None:
    assert registry.get_sample_value("process_start_time_seconds") is not None
    assert any(f.name.startswith("python_gc") for f in families(registry))


def test_build_info_one_child_per_component_in_a_shared_registry(
    exercised_registry: CollectorRegistry,
) -> None:
    infos = [
        s.labels
        for fam in families(exercised_registry)
        if fam.name == "fraudfl_build_info"
        for s in fam.samples
    ]
    components = sorted((i["component"], i["bank"]) for i in infos)
    assert components == [
        ("aggregator", ""),
        ("bank-node", "bank-a"),
        ("bank-node", "bank-b"),
        ("scoring", "bank-a"),
        ("scoring", "bank-b"),
    ]
    assert {i["config_hash"] for i in infos if i["component"] == "aggregator"} == {
        "0123456789abcdef"
    }
    assert all(i["version"] for i in infos)


def test_config_digest_is_stable_and_short() -> None:
    assert config_digest(b"a = 1\n") == config_digest(b"a = 1\n")
    assert config_digest(b"a = 1\n") != config_digest(b"a = 2\n")
    assert len(config_digest(b"")) == 16
