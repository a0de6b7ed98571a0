"""FedPer over the real broker: what the topics carry is the body only.

An observer reads every record of every topic of the run from Tansu. Without any key it checks
that no bank's personal head is in any record; opening the banks' sealed messages with the
aggregator's key (the most any reader of the aggregator's inbox can see) it checks that every
masked input of a training round has the body's length plus the weight; reading the models
topic as a bank it checks that each published model moves the body only.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from fraudfl.identity import Identity
from fraudfl.models import ModelSpec
from fraudfl.personalization import ParamPartition
from fraudfl.rounds.messages import SECAGG
from fraudfl.scoring.artifact import load_artifact
from fraudfl.secagg.messages import MaskedInput
from fraudfl.secagg.messages import decode as decode_secagg
from fraudfl.transport.broker import EmbeddedBroker
from fraudfl.transport.channel import Channel
from fraudfl.transport.kafka import KafkaTransport
from fraudfl.transport.sealing import EncryptionKey
from tests.integration.federation_harness import ThreadFederation, all_records

pytestmark = pytest.mark.integration

ROUNDS = 2


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _masked_inputs_as_the_aggregator(fed: ThreadFederation) -> dict[tuple[str, int], int]:
    """(bank, round) -> length of the masked vector it sent, opened with the aggregator's key."""
    cfg = fed.agg_config
    channel = Channel(
        KafkaTransport(fed.settings()), Identity.load(cfg.aggregator_id, cfg.identity_key),
        fed.allowlist, "itest",
        encryption_key=EncryptionKey.load(cfg.aggregator_id, cfg.encryption_key),
    )
    lengths: dict[tuple[str, int], int] = {}
    try:
        channel.listen([fed.layout.to_aggregator])
        idle = 0
        while idle < 3:
            batch = channel.receive(0.5)
            idle = 0 if batch else idle + 1
            for msg in batch:
                if msg.payload_type != SECAGG:
                    continue
                decoded = decode_secagg(msg.payload)
                if isinstance(decoded.payload, MaskedInput):
                    lengths[(msg.sender, decoded.header.round)] = len(decoded.payload.vector)
    finally:
        channel.transport.close()
    return lengths


def test_fedper_topics_carry_the_body_only(tmp_path: Path, broker: EmbeddedBroker) -> None:
    fed = ThreadFederation(
        tmp_path, broker, banks=3, rounds=ROUNDS, transactions=2400,
        aggregator={"training": {"personal_layers": 1}},
        bank={"": {"personalization": "fedper"}},
    )
    fed.start_banks()
    fed.start_aggregator()
    try:
        fed.wait("aggregator", 240)
        fed.wait_banks_have_model(ROUNDS)
    finally:
        fed.stop_all()
    assert [r["status"] for r in fed.rounds()] == ["completed"] * (ROUNDS + 1)

    models = fed.models()
    assert [info.version for info, _ in models] == list(range(ROUNDS + 1))
    partition = ParamPartition.for_model(ModelSpec.from_dict(models[0][0].spec).build(), 1)
    assert 0 < partition.shared_size < partition.size

    # Every masked input of a training round: the body's update and the weight, nothing more.
    lengths = _masked_inputs_as_the_aggregator(fed)
    trained = {key: n for key, n in lengths.items() if key[1] >= 1}
    assert set(trained) == {(b, r) for b in fed.bank_ids for r in range(1, ROUNDS + 1)}
    assert set(trained.values()) == {partition.shared_size + 1}

    # The published models: only the body moves, the head stays the initial one.
    initial_head = partition.personal(models[0][1])
    for (_, prev), (info, params) in itertools.pairwise(models):
        assert info.personal_layers == 1 and len(params) == partition.size
        np.testing.assert_array_equal(partition.personal(params), initial_head)
        assert not np.array_equal(partition.shared(params), partition.shared(prev))

    # Each bank serves body + its own trained head, and that head is in no record.
    blob = b"\x00".join(r.value for r in all_records(fed.settings(), fed.layout.prefix))
    final = models[-1][1]
    for bank in fed.bank_ids:
        state_dir = fed.bank_configs[bank].state_dir
        artifact = load_artifact(state_dir / "model")
        assert artifact.version == ROUNDS and artifact.personalization == "fedper"
        np.testing.assert_array_equal(
            partition.shared(artifact.params), partition.shared(final)
        )
        head = partition.personal(artifact.params)
        assert not np.allclose(head, initial_head)
        for dtype in ("<f4", "<f8"):
            needle = np.ascontiguousarray(head[:4], dtype=dtype).tobytes()
            assert needle not in blob, f"{bank}'s personal head is visible on Kafka"
        quality = json.loads((state_dir / "status.json").read_text())["model_quality"]
        assert quality["personalization"] == "fedper" and "personal" in quality
