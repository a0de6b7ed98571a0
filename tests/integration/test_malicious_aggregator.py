"""The services on a real broker against a malicious aggregator process: after the honest
federation has completed its rounds, a test double holding the aggregator's keys speaks the
real protocol (real SecAggServer setups, sealed and signed announcements) to isolate bank_00:
a Sybil round with itself as the other participant, then a second statistics round without
bank_02. The running bank nodes decline both with their policy's reasons, and no
secure-aggregation message (no keys, nothing derived from their data) comes back."""

from __future__ import annotations

import time
from pathlib import Path

from fraudfl.data.schema import load_schema
from fraudfl.data.stats import FeatureStats
from fraudfl.identity import Identity
from fraudfl.rounds import exact_sum
from fraudfl.rounds.messages import ANNOUNCE, DECLINE, Announcement, Decline, decode, encode
from fraudfl.rounds.policy import Refusal
from fraudfl.secagg.server import SecAggServer
from fraudfl.transport.broker import EmbeddedBroker
from fraudfl.transport.channel import Channel, VerifiedMessage
from fraudfl.transport.kafka import KafkaTransport
from fraudfl.transport.sealing import EncryptionKey
from tests.integration.federation_harness import ThreadFederation


def test_malicious_aggregator_process_cannot_isolate_a_bank(
    tmp_path: Path, broker: EmbeddedBroker
) -> None:
    fed = ThreadFederation(tmp_path, broker, banks=3, rounds=1)
    fed.start_banks()
    fed.start_aggregator()
    try:
        fed.wait("aggregator", 240)
        fed.wait_banks_have_model(1)
        rounds = fed.rounds()
        assert [r["status"] for r in rounds] == ["completed", "completed"]
        last = max(r["round"] for r in rounds)
        replies = _attack(fed, last)
    finally:
        fed.stop_all()
    attacked = {last + 1, last + 2}
    from_banks = [(m.sender, m.round, m.payload_type) for m in replies if m.round in attacked]
    # Only declines: no bank advertised keys (or sent anything else) for an attacked round.
    assert {p for _, _, p in from_banks} == {DECLINE}
    reasons = {(m.sender, m.round): decode(m.payload, Decline)[0] for m in replies
               if m.round in attacked}
    assert {k: (d.reason, d.detail) for k, d in reasons.items()} == {
        ("bank_00", last + 1): ("policy", Refusal.NON_BANK_PARTICIPANT.value),
        ("bank_00", last + 2): ("policy", Refusal.STATS_ALREADY_ANSWERED.value),
        ("bank_01", last + 2): ("policy", Refusal.STATS_ALREADY_ANSWERED.value),
    }


def _attack(fed: ThreadFederation, last: int) -> list[VerifiedMessage]:
    """Announce the two rounds with the aggregator's keys; collect what the banks answer."""
    cfg = fed.agg_config
    identity = Identity.load(cfg.aggregator_id, cfg.identity_key)
    channel = Channel(
        KafkaTransport(fed.settings()), identity, fed.allowlist, "itest",
        encryption_key=EncryptionKey.load(cfg.aggregator_id, cfg.encryption_key),
    )
    schema = load_schema(cfg.schema_file)
    length = FeatureStats.vector_size(schema) * exact_sum.DEFAULT_LIMBS
    # One at a time: a bank reading both announcements in one batch would (rightly) skip the
    # first as over, and nothing of it would show here.
    plans = [(last + 1, ["aggregator", "bank_00"], {"bank_00"}),
             (last + 2, ["bank_00", "bank_01"], {"bank_00", "bank_01"})]
    replies: list[VerifiedMessage] = []
    try:
        channel.listen([fed.layout.to_aggregator])
        for round_number, participants, answering in plans:
            server = SecAggServer.create(
                identity, fed.allowlist, "itest", round_number, participants, threshold=2,
                vector_length=length, bits=32,
                clip=float(exact_sum.levels(len(participants), 32)),
            )
            ann = Announcement(round=round_number, kind="stats",
                               participants=tuple(sorted(participants)))
            channel.send(fed.layout.control, recipient="*", round=round_number,
                         stage="announce", payload_type=ANNOUNCE,
                         payload=encode(ann, server.start()[0].data), seal_to=fed.bank_ids)
            channel.flush()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                replies += [m for m in channel.receive(0.5) if m.round > last]
                if answering <= {m.sender for m in replies if m.round == round_number}:
                    break
        time.sleep(2.0)  # anything else a bank might still send for these rounds
        replies += [m for m in channel.receive(0.5) if m.round > last]
        return replies
    finally:
        channel.transport.close()
