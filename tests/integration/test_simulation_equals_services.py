"""One engine: `fraudfl simulate` and the services over the broker train the same model.

The same 3-bank federation (FedProx, record-level DP, secure aggregation, FedPer) runs once as
the aggregator and bank-node services over the embedded broker and once through
`fraudfl simulate --config aggregator.toml` on the same data directory. The banks' generators
are seeded alike on both sides (a bank node's is unpredictable in production), so the two
runs must publish bit-identical global models: the round is implemented once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from fraudfl.cli import main
from fraudfl.scoring.artifact import load_artifact
from fraudfl.simulation import bank_rng
from fraudfl.transport.broker import EmbeddedBroker
from tests.integration.federation_harness import ThreadFederation

pytestmark = pytest.mark.integration

ROUNDS = 2
SEED = 0


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_simulate_and_services_publish_the_same_model(
    tmp_path: Path, broker: EmbeddedBroker
) -> None:
    fed = ThreadFederation(
        tmp_path, broker, banks=3, rounds=ROUNDS, transactions=2400,
        aggregator={"training": {"personal_layers": 1, "mu": 0.1},
                    "strategy": {"name": "fedprox"}},
        bank={"": {"personalization": "fedper"}},
    )
    for index, bank in enumerate(fed.bank_ids):
        fed.start_bank(bank, rng=bank_rng(SEED, index))
    fed.start_aggregator()
    try:
        fed.wait("aggregator", 240)
        fed.wait_banks_have_model(ROUNDS)
    finally:
        fed.stop_all()
    models = fed.models()
    assert [info.version for info, _ in models] == list(range(ROUNDS + 1))
    services_final = models[-1][1]

    privacy = fed.bank_configs[fed.bank_ids[0]].privacy
    assert privacy.enabled and privacy.noise_multiplier is not None
    data_dir = fed.bank_configs[fed.bank_ids[0]].data.parent
    saved = tmp_path / "simulated-model"
    code = main([
        "simulate", "--data", str(data_dir), "--config", str(fed.fed.aggregator_config),
        "--secure-aggregation", "--personalization", "fedper",
        "--noise-multiplier", str(privacy.noise_multiplier),
        "--target-epsilon", str(privacy.target_epsilon), "--seed", str(SEED),
        "--no-progress", "--save-model", str(saved),
    ])
    assert code == 0
    simulated_final = load_artifact(saved).params
    # Secure aggregation on both sides: the same quantised sums, hence the same bits.
    np.testing.assert_array_equal(simulated_final, services_final)
