"""The federation on a real Tansu broker: services in threads, real DP training, secure
aggregation over Kafka; every run ends with the models equal to plain FedAvg of the same
updates (each bank records its plain update locally, test-only)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from fraudfl.checkpoint import load_checkpoint
from fraudfl.cli.demo import LocalFederation
from fraudfl.identity import Allowlist, Identity
from fraudfl.scoring.artifact import load_artifact
from fraudfl.secagg.auth import unb64
from fraudfl.transport.broker import EmbeddedBroker
from fraudfl.transport.channel import Channel
from fraudfl.transport.kafka import KafkaTransport
from tests.integration.federation_harness import (
    ThreadFederation,
    all_records,
    crash_at,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Every service trains in a thread of this process: intra-op threads would only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_federation_rounds_and_outside_observer(tmp_path: Path, broker: EmbeddedBroker) -> None:
    fed = ThreadFederation(tmp_path, broker, banks=3, rounds=2)
    fed.start_banks()
    fed.start_aggregator()
    try:
        fed.wait("aggregator", 240)
        fed.wait_banks_have_model(2)
    finally:
        fed.stop_all()
    rounds = fed.rounds()
    assert [(r["round"], r["kind"], r["status"]) for r in rounds] == [
        (0, "stats", "completed"), (1, "train", "completed"), (2, "train", "completed")
    ]
    models = fed.assert_models_equal_plain_fedavg()
    assert [info.version for info, _ in models] == [0, 1, 2]
    assert all(info.participants == tuple(fed.bank_ids) for info, _ in models)
    for bank in fed.bank_ids:
        artifact = load_artifact(fed.bank_configs[bank].state_dir / "model")
        assert artifact.version == 2
        np.testing.assert_array_equal(artifact.params, models[-1][1])
        status = json.loads((fed.bank_configs[bank].state_dir / "status.json").read_text())
        assert 0 < status["epsilon"] < status["epsilon_budget"]

    # An outside observer of every topic sees no plain update and no plain Shamir share.
    records = all_records(fed.settings(), fed.layout.prefix)
    assert len(records) > 20
    blob = b"\x00".join(r.value for r in records)
    secrets_found = 0
    for bank in fed.bank_ids:
        for r in (1, 2):
            update, _ = fed.plain_update(bank, r)
            for dtype in ("<f4", "<f8"):
                needle = np.ascontiguousarray(update[:8], dtype=dtype).tobytes()
                assert needle not in blob, f"{bank}'s round-{r} update is visible on Kafka"
                secrets_found += 1
        saved = load_checkpoint(fed.bank_configs[bank].state_dir / "bank.ckpt")
        assert saved is not None
        held = saved[0]["participant"]["client"]["round"]["held"]
        assert held, "the bank holds Shamir shares of its group"
        for b_share, s_share in held.values():
            for share in (b_share, s_share):
                raw = unb64(share)
                assert len(raw) >= 16 and raw not in blob, f"a share held by {bank} leaked"
                secrets_found += 1
    assert secrets_found > 0


def test_dropouts_after_and_before_masked_input(tmp_path: Path, broker: EmbeddedBroker) -> None:
    """5 banks, t=3. Round 1: bank_01 dies after sending its masked input (its input stays in
    the sum: the others reveal its self-mask share). Round 2: bank_02 dies before sending its
    masked input (it leaves the sum: the others reveal its mask-key share)."""
    fed = ThreadFederation(
        tmp_path, broker, banks=5, rounds=2, transactions=5000,
        aggregator={"timeouts": {"advertise_keys": 6.0, "share_keys": 4.0,
                                 "masked_input": 4.0, "consistency_check": 4.0,
                                 "unmask": 4.0}},
        bank={"privacy": {"enabled": False}},
    )
    fed.start_banks({
        "bank_01": crash_at(lambda m: m.round == 1 and m.stage == "unmask"),
        "bank_02": crash_at(lambda m: m.round == 2 and m.stage == "masked_input"),
    })
    fed.start_aggregator()
    try:
        fed.wait("aggregator", 240)
    finally:
        fed.stop_all()
    assert fed.runners["bank_01"].crashed and fed.runners["bank_02"].crashed
    r1, r2 = (r for r in fed.rounds() if r["kind"] == "train")
    assert r1["status"] == r2["status"] == "completed"
    assert "bank_01" in r1["survivors"] and "bank_01" in r1["dropouts"]
    assert "bank_02" not in r2["survivors"] and "bank_02" in r2["dropouts"]
    assert r2["survivors"] == ["bank_00", "bank_03", "bank_04"]
    fed.assert_models_equal_plain_fedavg()


AGGREGATOR_STAGES = [
    "announce", "share_keys", "masked_input", "consistency_check", "unmask", "model"
]


def test_aggregator_crashes_at_every_stage(tmp_path: Path, broker: EmbeddedBroker) -> None:
    """The aggregator dies right after checkpointing each stage of round 1 (before its messages
    leave), and once while publishing model v1; every restart resumes from the checkpoint. The
    federation finishes with every round counted once and no model lost."""
    fed = ThreadFederation(
        tmp_path, broker, banks=3, rounds=2, bank={"privacy": {"enabled": False}}
    )
    fed.start_banks()
    crashes = 0
    for stage in AGGREGATOR_STAGES:
        runner = fed.start_aggregator(
            crash_at(lambda m, s=stage: m.round == 1 and m.stage == s)
        )
        runner.thread.join(120)
        assert runner.crashed, f"no crash at {stage}"
        crashes += 1
    fed.start_aggregator()
    try:
        fed.wait("aggregator", 120)
        fed.wait_banks_have_model(2)
    finally:
        fed.stop_all()
    assert crashes == len(AGGREGATOR_STAGES)
    rounds = fed.rounds()
    assert [(r["round"], r["status"]) for r in rounds] == [
        (0, "completed"), (1, "completed"), (2, "completed")
    ]
    models = fed.assert_models_equal_plain_fedavg()
    assert [info.version for info, _ in models] == [0, 1, 2]


def test_aggregator_process_killed_mid_round(tmp_path: Path, broker: EmbeddedBroker) -> None:
    """A real SIGKILL of the aggregator process while it waits for round 1's keys (banks are
    training); the restarted process resumes the round from its checkpoint."""
    fed = ThreadFederation(tmp_path, broker, banks=3, rounds=2)
    local = LocalFederation(
        fed.fed.directory, fed.fed.aggregator_config, fed.fed.bank_configs, tmp_path / "logs"
    )
    ckpt = fed.agg_config.state_dir / "aggregator.ckpt"

    def stage() -> tuple[int, str]:
        saved = load_checkpoint(ckpt) if ckpt.exists() else None
        if saved is None:
            return (-1, "")
        orch = saved[0]["orchestrator"]
        server = orch["server"]
        return (orch["round"], "" if server is None else str(server["stage"]))

    try:
        local.start_aggregator()
        fed.start_banks()
        wait_for(lambda: stage()[0] == 1, 120, "round 1 to start")
        local.kill("aggregator")
        killed_at = stage()
        assert killed_at[0] >= 1
        proc = local.start_aggregator()
        assert proc.wait(180) == 0
        fed.wait_banks_have_model(2)
    finally:
        local.stop_all()
        fed.stop_all()
    rounds = fed.rounds()
    assert [(r["round"], r["status"]) for r in rounds] == [
        (0, "completed"), (1, "completed"), (2, "completed")
    ]
    log_text = (tmp_path / "logs" / "aggregator.log").read_text()
    assert f"restarted from checkpoint: round {killed_at[0]}" in log_text
    fed.assert_models_equal_plain_fedavg()


def test_duplicates_unenrolled_bank_and_forged_signature(
    tmp_path: Path, broker: EmbeddedBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Every record is delivered twice by every service, an unenrolled bank and a forger
    (claiming to be bank_00, signing with its own key) write to the aggregator's topic: both are
    rejected and logged, and the rounds come out exactly as plain FedAvg."""
    caplog.set_level(logging.WARNING, logger="fraudfl.transport.channel")
    fed = ThreadFederation(
        tmp_path, broker, banks=3, rounds=2, bank={"privacy": {"enabled": False}}
    )

    def twice(topic: str, key: bytes | None, value: bytes) -> int:
        return 2

    fed.start_banks({b: twice for b in fed.bank_ids})
    fed.start_aggregator(twice)
    mallory_key = Identity.generate("mallory")
    rogue_allow = Allowlist(dict(fed.allowlist.participants), dict(fed.allowlist.encryption_keys))
    rogue_allow.enroll("mallory", mallory_key.public_bytes)
    sent = []
    for identity in (mallory_key, Identity("bank_00", mallory_key.private_key)):
        with KafkaTransport(fed.settings()) as transport:
            channel = Channel(transport, identity, rogue_allow, "itest")
            wait_for(lambda t=transport: fed.layout.to_aggregator in t.list_topics(), 60,
                     "topics")
            sent.append(channel.send(
                fed.layout.to_aggregator, recipient="aggregator", round=1,
                stage="advertise_keys", payload_type="secagg", payload=b"\x00" * 64,
                seal_to=True,
            ))
            channel.flush()
    try:
        fed.wait("aggregator", 240)
        fed.wait_banks_have_model(2)
    finally:
        fed.stop_all()
    rejections = [r.getMessage() for r in caplog.records if "rejected a message" in r.getMessage()]
    assert any("aggregator" in m and "unknown_sender" in m and "mallory" in m for m in rejections)
    assert any("aggregator" in m and "bad_signature" in m and "bank_00" in m for m in rejections)
    assert [r["status"] for r in fed.rounds()] == ["completed"] * 3
    fed.assert_models_equal_plain_fedavg()


def test_bank_over_budget_declines(tmp_path: Path, broker: EmbeddedBroker) -> None:
    """bank_02 calibrates its noise to spend its whole budget in one round, so it declines
    round 2 (saying so, the aggregator does not wait) while the other two carry on."""
    fed = ThreadFederation(
        tmp_path, broker, banks=3, rounds=2, transactions=6000,
        aggregator={"timeouts": {"advertise_keys": 120.0}},
        bank_privacy={"bank_02": {"noise_multiplier": None, "target_epsilon": 3.0,
                                  "planned_rounds": 1}},
    )
    fed.start_banks()
    fed.start_aggregator()
    try:
        fed.wait("aggregator", 240)
        fed.wait_banks_have_model(2)
    finally:
        fed.stop_all()
    r1, r2 = (r for r in fed.rounds() if r["kind"] == "train")
    assert r1["status"] == r2["status"] == "completed"
    assert "bank_02" in r1["survivors"]
    assert r2["declined"] == ["bank_02"] and r2["survivors"] == ["bank_00", "bank_01"]
    assert r2["dropouts"] == []
    # Declining did not cost a stage timeout.
    assert r2["finished_at"] - r2["started_at"] < 60
    status = fed.bank_status("bank_02")
    assert status["last_round"]["declined"] is True
    assert 0 < status["epsilon"] <= 3.0
    fed.assert_models_equal_plain_fedavg()


def test_broker_restart_mid_round(tmp_path: Path, durable_broker: EmbeddedBroker) -> None:
    """The broker (durable S3 storage) is restarted while round 1 is in progress; the services
    reconnect and finish."""
    fed = ThreadFederation(tmp_path, durable_broker, banks=3, rounds=2)
    ckpt = fed.agg_config.state_dir / "aggregator.ckpt"

    def in_round_one() -> bool:
        saved = load_checkpoint(ckpt) if ckpt.exists() else None
        return saved is not None and saved[0]["orchestrator"]["round"] == 1

    fed.start_banks()
    fed.start_aggregator()
    try:
        wait_for(in_round_one, 120, "round 1 to start")
        durable_broker.restart()
        fed.wait("aggregator", 240)
        fed.wait_banks_have_model(2, timeout_s=60)
    finally:
        fed.stop_all()
    assert [r["status"] for r in fed.rounds()] == ["completed"] * 3
    fed.assert_models_equal_plain_fedavg()


def test_bank_restart_continues(tmp_path: Path, broker: EmbeddedBroker) -> None:
    """bank_01 dies after sending its masked input of round 1 and is restarted at once: it
    resumes from its checkpoint (answers the unmask request with the keys of that round, does
    not retrain) and its privacy spending carries over into round 2."""
    fed = ThreadFederation(tmp_path, broker, banks=3, rounds=2,
                           aggregator={"timeouts": {"unmask": 120.0}})
    fed.start_banks({"bank_01": crash_at(lambda m: m.round == 1 and m.stage == "unmask")})
    fed.start_aggregator()
    try:
        wait_for(lambda: fed.runners["bank_01"].crashed, 120, "bank_01 to crash")
        spent_before = json.loads(
            (fed.bank_configs["bank_01"].state_dir / "accountant.json").read_text()
        )["history"]
        fed.start_bank("bank_01")
        fed.wait("aggregator", 240)
        fed.wait_banks_have_model(2)
    finally:
        fed.stop_all()
    r1, r2 = (r for r in fed.rounds() if r["kind"] == "train")
    # The restarted bank answered in time: no dropout, no unmask deadline waited for.
    assert r1["dropouts"] == [] and r1["survivors"] == fed.bank_ids
    assert r1["finished_at"] - r1["started_at"] < 60
    assert r2["survivors"] == fed.bank_ids
    history = json.loads(
        (fed.bank_configs["bank_01"].state_dir / "accountant.json").read_text()
    )["history"]
    # Round 2's DP steps were added to round 1's (entries with equal noise and rate merge).
    assert sum(h[2] for h in history) == 2 * sum(h[2] for h in spent_before)
    assert len(list((fed.bank_configs["bank_01"].state_dir / "plain_updates").iterdir())) == 2
    fed.assert_models_equal_plain_fedavg()
