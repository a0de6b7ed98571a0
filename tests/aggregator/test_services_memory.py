"""The aggregator and bank-node services over the in-memory transport (threads), with metrics."""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from aggregator.service import AggregatorService
from bank_node.service import BankNodeService
from fraudfl.cli.init import FederationPlan, write_federation
from fraudfl.config import AggregatorConfig, BankNodeConfig, load_config
from fraudfl.monitoring import AggregatorMetrics, BankMetrics, new_registry
from fraudfl.transport.memory import MemoryBroker, MemoryTransport


def test_services_in_memory_export_metrics(tmp_path: Path) -> None:
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    fed = write_federation(FederationPlan(
        directory=tmp_path / "fed", banks=2, transactions=1500, federation_id="mem", rounds=2,
        aggregator_overrides={"training": {"hidden": [8], "batch_size": 64},
                              "timeouts": {"advertise_keys": 60.0}},
        bank_overrides={"privacy": {"noise_multiplier": 1.0, "target_epsilon": 50.0}},
    ))
    broker = MemoryBroker()
    stop = threading.Event()
    bank_registries = {}
    threads = []
    for bank, path in fed.bank_configs.items():
        cfg = load_config(BankNodeConfig, path, env={})
        registry = new_registry()
        bank_registries[bank] = registry
        service = BankNodeService(
            cfg, MemoryTransport(broker),
            metrics=BankMetrics(registry, federation="mem", bank=bank),
        )
        threads.append(threading.Thread(target=service.run, args=(stop,), daemon=True))
    for t in threads:
        t.start()
    agg_registry = new_registry()
    agg_cfg = load_config(AggregatorConfig, fed.aggregator_config, env={})
    service = AggregatorService(
        agg_cfg, MemoryTransport(broker),
        metrics=AggregatorMetrics(agg_registry, federation="mem"),
    )
    try:
        assert service.run() == 0
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        torch.set_num_threads(threads_before)

    def agg(name: str, **labels: str) -> float:
        value = agg_registry.get_sample_value(name, {"federation": "mem", **labels})
        assert value is not None, name
        return value

    # Round 0 (feature statistics) and two training rounds each published a model.
    assert agg("fraudfl_aggregator_rounds_completed_total", kind="stats") == 1
    assert agg("fraudfl_aggregator_rounds_completed_total", kind="train") == 2
    assert agg("fraudfl_aggregator_rounds_started_total", kind="train") == 2
    assert agg("fraudfl_aggregator_model_version") == 2
    assert agg("fraudfl_aggregator_checkpoint_writes_total") >= 3
    assert 0 < agg("fraudfl_aggregator_global_model_quality", metric="auprc") <= 1
    for stage in ("masked_input", "consistency_check", "unmask"):
        assert agg("fraudfl_aggregator_secagg_stage_duration_seconds_count", stage=stage) == 3
        assert agg("fraudfl_aggregator_stage_participants", stage=stage) == 2
    assert agg("fraudfl_aggregator_messages_rejected_total", reason="bad_signature") == 0
    for bank, registry in bank_registries.items():
        labels = {"federation": "mem", "bank": bank}
        spent = registry.get_sample_value("fraudfl_bank_privacy_epsilon_spent", labels)
        assert spent is not None and 0 < spent < 50
        joined = {kind: registry.get_sample_value("fraudfl_bank_rounds_joined_total",
                                                  {**labels, "kind": kind})
                  for kind in ("stats", "train")}
        assert joined == {"stats": 1, "train": 2}
        # Every reply is counted under its stage, the survivor confirmation included.
        for stage in ("masked_input", "consistency_check", "unmask"):
            count = registry.get_sample_value(
                "fraudfl_bank_secagg_stage_duration_seconds_count", {**labels, "stage": stage}
            )
            assert count == 3, (bank, stage)
