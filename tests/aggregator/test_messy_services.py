"""Messy data through the services: the new statistics ride the existing secure-sum round."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from aggregator.service import AggregatorService
from bank_node.service import MODEL_DIR, BankNodeService
from fraudfl.cli.init import FederationPlan, write_federation
from fraudfl.config import AggregatorConfig, BankNodeConfig, load_config
from fraudfl.data import (
    FeaturePipeline,
    compute_stats,
    load_bank_file,
    load_schema,
    sum_stats,
    train_val_split,
)
from fraudfl.scoring import Scorer, load_artifact
from fraudfl.transport.memory import MemoryBroker, MemoryTransport


def test_messy_federation_fits_the_pooled_pipeline_and_scores(tmp_path: Path) -> None:
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    fed = write_federation(FederationPlan(
        directory=tmp_path / "fed", banks=2, transactions=2000, federation_id="messy", rounds=1,
        messy=True,
        aggregator_overrides={"training": {"hidden": [8], "batch_size": 64},
                              "timeouts": {"advertise_keys": 60.0}},
        bank_overrides={"privacy": {"noise_multiplier": 1.0, "target_epsilon": 50.0}},
    ))
    broker = MemoryBroker()
    stop = threading.Event()
    configs = {b: load_config(BankNodeConfig, p, env={}) for b, p in fed.bank_configs.items()}
    threads = [
        threading.Thread(target=BankNodeService(cfg, MemoryTransport(broker)).run, args=(stop,),
                         daemon=True)
        for cfg in configs.values()
    ]
    for t in threads:
        t.start()
    agg_cfg = load_config(AggregatorConfig, fed.aggregator_config, env={})
    try:
        assert AggregatorService(agg_cfg, MemoryTransport(broker)).run() == 0
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        torch.set_num_threads(threads_before)

    schema = load_schema(agg_cfg.schema_file)
    trains = [
        train_val_split(load_bank_file(cfg.data, schema), schema, cfg.val_fraction,
                        seed=cfg.split_seed)[0]
        for cfg in configs.values()
    ]
    expected = FeaturePipeline.fit(sum_stats(compute_stats(f, schema) for f in trains))
    for bank, cfg in configs.items():
        artifact = load_artifact(cfg.state_dir / MODEL_DIR)
        got = artifact.pipeline
        # The exact secure sum of the statistics vectors: the same pipeline as pooled rows give.
        assert got.feature_names == expected.feature_names, bank
        assert {"device_id:missing", "timestamp:hour_sin", "card_age_days:missing"} <= set(
            got.feature_names)
        for col, (x, f) in expected.knots.items():
            np.testing.assert_array_equal(got.knots[col][0], x)
            np.testing.assert_array_equal(got.knots[col][1], f)
        assert artifact.spec.embed == got.hashed_blocks() != ()
        frame = load_bank_file(cfg.data, schema).head(50)
        scores = Scorer(artifact).score_frame(frame)
        assert np.isfinite(scores.probabilities).all()
