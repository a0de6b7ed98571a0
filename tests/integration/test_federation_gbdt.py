"""A gradient-boosted trees federation over the embedded broker: the real aggregator and bank
nodes, secure aggregation and DP on, a bank killed mid-tree and the aggregator restarted
mid-tree; the final ensemble is served by ``fraudfl serve`` and scored over HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from fraudfl.checkpoint import load_checkpoint
from fraudfl.data.loading import load_bank_file
from fraudfl.data.schema import load_schema
from fraudfl.scoring.artifact import load_artifact
from fraudfl.transport.broker import EmbeddedBroker
from tests.cli.test_serve import free_port
from tests.integration.federation_harness import SentMessage, ThreadFederation, crash_at, wait_for

pytestmark = pytest.mark.integration

TREES = 3
DEPTH = 2
EPSILON = 8.0


def mid_tree(fed: ThreadFederation, tree: int) -> tuple[int, bool]:
    """The aggregator's round and whether its checkpoint is in the middle of tree ``tree``
    (a level of it summed, its leaves not yet)."""
    path = fed.agg_config.state_dir / "aggregator.ckpt"
    saved = load_checkpoint(path) if path.exists() else None
    if saved is None:
        return -1, False
    orch = saved[0]["orchestrator"]
    job = orch.get("trees")
    if job is None or job["ensemble"] is None:
        return orch["round"], False
    return orch["round"], job["round_sums"] > 0 and job["ensemble"]["n_trees"] == tree


def test_gbdt_federation_survives_a_bank_kill_and_an_aggregator_restart_mid_tree(
    tmp_path: Path, broker: EmbeddedBroker
) -> None:
    # rounds.rounds (5) is not the job's length (3 trees): a restarted aggregator must not
    # take the difference for rounds to add.
    fed = ThreadFederation(
        tmp_path, broker, banks=3, rounds=5, transactions=3000,
        aggregator={
            "training": {"model": "gbdt"},
            "trees": {"n_estimators": TREES, "max_depth": DEPTH, "max_bin": 16,
                      "learning_rate": 0.5, "min_child_weight": 0.1, "subsample": 0.8,
                      "label_counts": False, "base_score": 0.02, "clip": 4096.0},
            "timeouts": {"advertise_keys": 60.0, "unmask": 60.0},
        },
        bank={"privacy": {"enabled": True, "noise_multiplier": None,
                          "target_epsilon": EPSILON}},
    )

    def bank_dies(m: SentMessage) -> bool:
        # bank_01 dies with its keys for a level of the first tree below the root unsent.
        rnd, inside = mid_tree(fed, 0)
        return inside and m.round == rnd and m.stage == "advertise_keys"

    def aggregator_dies(m: SentMessage) -> bool:
        rnd, inside = mid_tree(fed, 1)
        return inside and m.round == rnd and m.stage == "share_keys"

    fed.start_banks({"bank_01": crash_at(bank_dies)})
    first = fed.start_aggregator(crash_at(aggregator_dies))
    try:
        wait_for(lambda: fed.runners["bank_01"].crashed, 120, "bank_01 to die mid-tree")
        fed.start_bank("bank_01")
        first.thread.join(120)
        assert first.crashed, "the aggregator did not die mid-tree"
        killed_at = mid_tree(fed, 1)
        assert killed_at[1]
        fed.start_aggregator()
        fed.wait("aggregator", 120)
        wait_for(lambda: all(fed.bank_status(b).get("model_version") is not None
                             and (fed.bank_configs[b].state_dir / "model").exists()
                             for b in fed.bank_ids), 60, "every bank to serve a model")
        final_version = fed.rounds()[-1]["model_version"]
        fed.wait_banks_have_model(final_version)
    finally:
        fed.stop_all()

    rounds = fed.rounds()
    kinds = [r["kind"] for r in rounds]
    assert kinds[:2] == ["stats", "tree_bins"] and set(kinds[2:]) == {"tree"}
    assert all(r["status"] == "completed" for r in rounds)
    # One sum per level that had open nodes and one for the leaves, per tree.
    assert TREES * 2 <= len(rounds) - 2 <= TREES * (DEPTH + 1)
    log_text = "\n".join(r.get("reason", "") for r in rounds)
    assert "not resumable" not in log_text

    for bank in fed.bank_ids:
        artifact = load_artifact(fed.bank_configs[bank].state_dir / "model")
        assert artifact.trees is not None and artifact.trees.n_trees == TREES
        history = json.loads(
            (fed.bank_configs[bank].state_dir / "accountant.json").read_text())["history"]
        steps = sum(h[2] for h in history)
        # One step per tree; the bank that lost its row sample mid-tree paid a second one for
        # that tree (conservative), and every bank stays within its budget.
        assert steps == TREES + (1 if bank == "bank_01" else 0), (bank, history)
        assert 0 < fed.bank_status(bank)["epsilon"] <= EPSILON

    # The final model, served by `fraudfl serve` and scored over HTTP.
    bank = fed.bank_ids[0]
    model_dir = fed.bank_configs[bank].state_dir / "model"
    artifact = load_artifact(model_dir)
    schema = load_schema(fed.bank_configs[bank].schema_path)
    rows = load_bank_file(fed.bank_configs[bank].data, schema).head(5)
    pipeline = artifact.pipeline
    records = [
        {**{c: float(r[c]) for c in pipeline.numeric},
         **{c: str(r[c]) for c in pipeline.categorical}, "transaction_id": i}
        for i, r in enumerate(rows.to_dict(orient="records"))
    ]
    assert artifact.trees is not None
    X, _ = pipeline.transform(rows)
    expected = artifact.trees.predict_proba(X)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fraudfl", "serve", "--model", str(model_dir), "--port",
         str(port), "--federation", "itest"],
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    err: list[str] = []
    threading.Thread(target=lambda: err.extend(line.decode() for line in proc.stderr),
                     daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "".join(err)
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "fraudfl serve did not come up"
            time.sleep(0.2)
        assert httpx.get(f"{url}/model").json()["version"] == artifact.version
        response = httpx.post(f"{url}/score", json=records, timeout=10)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["count"] == len(records)
        served = np.array([r["probability"] for r in body["results"]])
        np.testing.assert_allclose(served, expected, rtol=1e-6)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
