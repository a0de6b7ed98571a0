"""A signed, deeply nested Decline from an enrolled bank used to raise RecursionError in the
aggregator's loop, and again after every restart (the record is re-read). Over the in-memory
transport: the aggregator counts and skips it, is stopped and restarted right after, and the
federation completes."""

from __future__ import annotations

import struct
import threading
import time
from pathlib import Path

import torch

from aggregator.service import AggregatorService
from bank_node.service import BankNodeService
from fraudfl.cli.init import FederationPlan, write_federation
from fraudfl.config import AggregatorConfig, BankNodeConfig, load_config
from fraudfl.identity import Allowlist, Identity
from fraudfl.rounds.messages import DECLINE, Decline
from fraudfl.transport.channel import Channel
from fraudfl.transport.memory import MemoryBroker, MemoryTransport
from fraudfl.transport.sealing import EncryptionKey
from fraudfl.transport.topics import TopicLayout

POISON = struct.pack(">4sBBI", b"FFRM", 1, Decline.KIND, 200_004) + (
    b"[" * 100_000 + b"1" + b"]" * 100_000 + b"{}"
)[: 200_004]


def test_poisoned_decline_stops_no_aggregator_now_or_after_restart(tmp_path: Path) -> None:
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    fed = write_federation(FederationPlan(
        directory=tmp_path / "fed", banks=2, transactions=1200, federation_id="mem", rounds=1,
        aggregator_overrides={"training": {"hidden": [8], "batch_size": 64},
                              "timeouts": {"advertise_keys": 60.0}},
        bank_overrides={"privacy": {"noise_multiplier": 1.0, "target_epsilon": 50.0}},
    ))
    broker = MemoryBroker()
    stop_banks = threading.Event()
    banks = []
    for path in fed.bank_configs.values():
        service = BankNodeService(load_config(BankNodeConfig, path, env={}),
                                  MemoryTransport(broker))
        banks.append(threading.Thread(target=service.run, args=(stop_banks,), daemon=True))
    agg_cfg = load_config(AggregatorConfig, fed.aggregator_config, env={})
    try:
        for t in banks:
            t.start()
        first = AggregatorService(agg_cfg, MemoryTransport(broker))
        stop_first = threading.Event()
        runner = threading.Thread(target=first.run, args=(stop_first,), daemon=True)
        runner.start()
        layout = TopicLayout("mem")
        deadline = time.monotonic() + 60
        while layout.to_aggregator not in MemoryTransport(broker).list_topics():
            assert time.monotonic() < deadline, "the aggregator never created its topics"
            time.sleep(0.05)
        bank_cfg = load_config(BankNodeConfig, fed.bank_configs["bank_00"], env={})
        sender = Channel(
            MemoryTransport(broker), Identity.load("bank_00", bank_cfg.identity_key),
            Allowlist.load(bank_cfg.allowlist), "mem",
            encryption_key=EncryptionKey.load("bank_00", bank_cfg.encryption_key),
        )
        sender.send(layout.to_aggregator, recipient="aggregator", round=0, stage="announce",
                    payload_type=DECLINE, payload=POISON, seal_to=True)
        sender.flush()
        while first.orchestrator.rejections.get("malformed", 0) < 1:
            assert runner.is_alive(), "the poisoned Decline stopped the aggregator"
            assert time.monotonic() < deadline, "the poisoned Decline was never read"
            time.sleep(0.05)
        stop_first.set()
        runner.join(60)
        assert not runner.is_alive()
        # A new process over the same state re-reads from its checkpointed offsets.
        second = AggregatorService(agg_cfg, MemoryTransport(broker))
        assert second.run() == 0
        assert second.orchestrator.completed == 1
    finally:
        stop_banks.set()
        for t in banks:
            t.join(30)
        torch.set_num_threads(threads_before)
