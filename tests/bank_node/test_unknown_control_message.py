"""A bank node that meets a signed control message of an unknown type counts it and goes on
(and again after a restart): counting it must not stop the service."""

from __future__ import annotations

import threading
from pathlib import Path

from bank_node.service import BankNodeService
from fraudfl.cli.init import FederationPlan, write_federation
from fraudfl.config import BankNodeConfig, load_config
from fraudfl.identity import Allowlist, Identity
from fraudfl.monitoring import BankMetrics, new_registry
from fraudfl.transport.channel import Channel
from fraudfl.transport.memory import MemoryBroker, MemoryTransport
from fraudfl.transport.topics import TopicLayout


def test_an_unknown_message_type_is_counted_not_fatal(tmp_path: Path) -> None:
    fed = write_federation(FederationPlan(directory=tmp_path / "fed", banks=2, transactions=400,
                                          federation_id="poc", rounds=1))
    cfg = load_config(BankNodeConfig, fed.bank_configs["bank_00"], env={})
    broker = MemoryBroker()
    transport = MemoryTransport(broker)
    layout = TopicLayout("poc")
    transport.create_topics(layout.specs(["bank_00", "bank_01"]))
    aggregator = Identity.load("aggregator", next(fed.directory.rglob("aggregator.key")))
    Channel(transport, aggregator, Allowlist.load(cfg.allowlist), "poc").send(
        layout.control, recipient="*", round=0, stage="announce", payload_type="x",
        payload=b"{}",
    )
    transport.flush()
    for _ in range(2):  # the second start reads the same record again
        registry = new_registry()
        service = BankNodeService(cfg, MemoryTransport(broker),
                                  metrics=BankMetrics(registry, federation="poc", bank="bank_00"))
        stop = threading.Event()
        timer = threading.Timer(3.0, stop.set)
        timer.start()
        try:
            assert service.run(stop) == 0
        finally:
            timer.cancel()
        rejected = registry.get_sample_value(
            "fraudfl_bank_messages_rejected_total",
            {"federation": "poc", "bank": "bank_00", "reason": "malformed"},
        )
        assert rejected is not None and rejected >= 1
