"""The federation on a real Tansu broker: services in threads, real DP training, secure
aggregation over Kafka; every run ends with the models equal to plain FedAvg of the same
updates (each bank records its plain update locally, test-only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fraudfl.checkpoint import load_checkpoint
from fraudfl.scoring.artifact import load_artifact
from fraudfl.secagg.auth import unb64
from fraudfl.transport.broker import EmbeddedBroker
from tests.integration.federation_harness import ThreadFederation, all_records

pytestmark = pytest.mark.integration


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
