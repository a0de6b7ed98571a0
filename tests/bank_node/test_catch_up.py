"""A bank node catching up on a finished federation spends no privacy budget, however its
transport splits the backlog into polls."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import torch

from aggregator.service import AggregatorService
from bank_node.service import BankNodeService
from fraudfl.cli.init import FederationPlan, write_federation
from fraudfl.config import AggregatorConfig, BankNodeConfig, load_config
from fraudfl.privacy.accountant import PrivacyAccountant
from fraudfl.transport.base import ForwardingTransport, Record, Transport
from fraudfl.transport.memory import MemoryBroker, MemoryTransport


class OneRecordPerPoll(ForwardingTransport):
    """Hands out one record per poll: the worst split of a backlog (an announcement in one
    poll, the messages showing its round is over in later ones)."""

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner)
        self.buffer: list[Record] = []

    def poll(self, timeout_s: float) -> list[Record]:
        if not self.buffer:
            self.buffer = self.inner.poll(timeout_s)
        return [self.buffer.pop(0)] if self.buffer else []


def test_late_bank_reading_one_record_per_poll_trains_for_no_finished_round(
    tmp_path: Path,
) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    fed = write_federation(FederationPlan(
        directory=tmp_path / "fed", banks=3, transactions=1500, federation_id="late", rounds=1,
        aggregator_overrides={"training": {"hidden": [8], "batch_size": 64},
                              "timeouts": {"advertise_keys": 3.0}},
        bank_overrides={"privacy": {"noise_multiplier": 1.0, "target_epsilon": 50.0}},
    ))
    configs = {b: load_config(BankNodeConfig, p, env={}) for b, p in fed.bank_configs.items()}
    broker = MemoryBroker()
    stop = threading.Event()
    # bank_02 is down while the federation runs its rounds without it.
    threads = [
        threading.Thread(target=BankNodeService(cfg, MemoryTransport(broker)).run,
                         args=(stop,), daemon=True)
        for bank, cfg in configs.items() if bank != "bank_02"
    ]
    late = configs["bank_02"]
    try:
        for t in threads:
            t.start()
        agg_cfg = load_config(AggregatorConfig, fed.aggregator_config, env={})
        assert AggregatorService(agg_cfg, MemoryTransport(broker)).run() == 0
        rounds = [json.loads(line) for line in
                  (agg_cfg.state_dir / "rounds.jsonl").read_text().splitlines()]
        assert [(r["round"], r["status"], r["survivors"]) for r in rounds] == [
            (0, "completed", ["bank_00", "bank_01"]), (1, "completed", ["bank_00", "bank_01"])
        ]
        service = BankNodeService(late, OneRecordPerPoll(MemoryTransport(broker)))
        catch_up = threading.Thread(target=service.run, args=(stop,), daemon=True)
        catch_up.start()
        threads.append(catch_up)
        deadline = time.monotonic() + 60
        while service.participant.model_version != 1:
            assert time.monotonic() < deadline, "the late bank did not catch up"
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        torch.set_num_threads(before)
    # Neither the statistics round nor round 1 was joined: no reply, no DP step.
    assert service.participant.handled_round == -1
    assert PrivacyAccountant.load(late.state_dir / "accountant.json").total_steps == 0
    assert service.participant.closed_round == 1
