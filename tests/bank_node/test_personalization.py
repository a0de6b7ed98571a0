"""Personalisation in the bank node: FedPer sends the body only; fine-tuning and Ditto train
under DP through the bank's accountant, which can refuse; the node serves and reports both."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from aggregator.service import AggregatorService
from bank_node.service import BankNodeService
from fraudfl.cli.init import FederationPlan, write_federation
from fraudfl.config import AggregatorConfig, BankNodeConfig, load_config
from fraudfl.models import ModelSpec
from fraudfl.monitoring import AggregatorMetrics, BankMetrics, new_registry
from fraudfl.personalization import ParamPartition
from fraudfl.privacy.accountant import BudgetExhausted, PrivacyAccountant, PrivacyBudget
from fraudfl.rounds.messages import ANNOUNCE, SECAGG, Announcement, decode
from fraudfl.rounds.participant import Reply
from fraudfl.scoring.artifact import load_artifact
from fraudfl.secagg.messages import MaskedInput
from fraudfl.secagg.messages import decode as decode_secagg
from fraudfl.transport.memory import MemoryBroker, MemoryTransport
from tests.rounds.federation import make_federation


def test_fedper_banks_send_the_body_only(tmp_path: Path) -> None:
    """A FedPer federation (the aggregator's training.personal_layers = 1): every masked input a
    bank sends has the body's length (+ the weight), the sum the aggregator applies is the
    body's FedAvg, the published head never moves, and each bank's own head is trained."""
    fed = make_federation(
        tmp_path, rounds=2, agg_overrides={"training": {"personal_layers": 1}},
        bank_overrides={"personalization": "fedper"},
    )
    sent: list[tuple[str, Reply]] = []

    def record(bank: str) -> Callable[[Reply], bool]:
        def rule(reply: Reply) -> bool:
            sent.append((bank, reply))
            return False  # never drop: only record what the bank sends

        return rule

    for bank in fed.banks:
        fed.drop[bank] = record(bank)
    fed.pump(fed.orchestrator.start(fed.now))
    assert fed.orchestrator.completed == 2
    spec = ModelSpec.from_dict(fed.models[0][0].spec)
    partition = ParamPartition.for_model(spec.build(), 1)
    assert 0 < partition.shared_size < partition.size

    masked = [
        decode_secagg(r.payload).payload for _, r in sent
        if r.payload_type == SECAGG and r.round >= 1
    ]
    masked = [m for m in masked if isinstance(m, MaskedInput)]
    assert len(masked) == 2 * len(fed.banks)
    # Weighted rounds carry [weight * update, weight]: the body and one more coordinate.
    assert {len(m.vector) for m in masked} == {partition.shared_size + 1}
    announcements = [decode(o.payload, Announcement)[0] for o in fed.transcript
                     if o.payload_type == ANNOUNCE and o.round >= 1]
    assert {a.personal_layers for a in announcements} == {1}

    initial_head = partition.personal(fed.models[0][1])
    prev = fed.models[0][1]
    for info, params in fed.models[1:]:
        assert info.personal_layers == 1
        np.testing.assert_array_equal(partition.personal(params), initial_head)
        total = np.zeros(partition.shared_size)
        weights = 0.0
        for bank in info.participants:
            rec = fed.plain_updates(bank, info.round)
            assert rec is not None and rec[0].shape == (partition.shared_size,)
            total += rec[1] * rec[0]
            weights += rec[1]
        expected = partition.shared(prev) + total / weights
        np.testing.assert_allclose(partition.shared(params), expected, rtol=0, atol=1e-5)
        prev = params
    heads = [bank.fedper.head for bank in fed.banks.values() if bank.fedper is not None]
    assert len(heads) == len(fed.banks)
    for head in heads:
        assert head is not None and not np.allclose(head, initial_head)


def test_finetune_is_charged_and_refused_beyond_the_budget(tmp_path: Path) -> None:
    fed = make_federation(
        tmp_path, rounds=1, privacy=True, target_epsilon=50.0, noise_multiplier=1.0,
        bank_overrides={"personalization": "finetune"},
    )
    fed.pump(fed.orchestrator.start(fed.now))
    bank = fed.banks["bank_00"]
    assert bank.model_version == 1
    X_val, y_val = bank.training_data()
    steps = bank.accountant.total_steps
    personal = bank.personalize(X_val, y_val)
    assert personal is not None
    assert bank.accountant.total_steps > steps  # the personal epochs were charged
    assert not np.array_equal(personal.params, bank.params)
    assert set(personal.comparison.global_metrics) >= {"auprc", "loss"}

    # A bank whose remaining budget cannot cover the personal epochs: refused up front.
    spent = bank.accountant.epsilon()
    bank.accountant = PrivacyAccountant(
        bank.accountant.mechanism, budget=PrivacyBudget(spent + 0.01, 1e-4),
        history=list(bank.accountant.history), label="bank_00",
    )
    before = bank.accountant.total_steps
    with pytest.raises(BudgetExhausted):
        bank.personalize(X_val, y_val)
    assert bank.accountant.total_steps == before


def test_services_serve_personal_models_and_skip_beyond_budget(tmp_path: Path) -> None:
    """In-memory services: bank_00 fine-tunes each new model under DP and serves the result;
    bank_01's personal training (many epochs) would exceed its budget, so it serves the
    global model and counts the skip. Both export global vs personal quality."""
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    fed = write_federation(FederationPlan(
        directory=tmp_path / "fed", banks=2, transactions=1500, federation_id="pers", rounds=2,
        aggregator_overrides={"training": {"hidden": [8], "batch_size": 64},
                              "timeouts": {"advertise_keys": 60.0}},
        bank_overrides={"": {"personalization": "finetune"},
                        "privacy": {"noise_multiplier": 1.0, "target_epsilon": 30.0}},
    ))
    broker = MemoryBroker()
    stop = threading.Event()
    registries = {}
    threads = []
    for bank, path in fed.bank_configs.items():
        cfg = load_config(BankNodeConfig, path, env={})
        if bank == "bank_01":
            cfg = cfg.model_copy(update={
                "personal_training": cfg.personal_training.model_copy(update={"epochs": 400})
            })
        registries[bank] = new_registry()
        service = BankNodeService(cfg, MemoryTransport(broker),
                                  metrics=BankMetrics(registries[bank], federation="pers",
                                                      bank=bank))
        threads.append(threading.Thread(target=service.run, args=(stop,), daemon=True))
    for t in threads:
        t.start()
    agg_cfg = load_config(AggregatorConfig, fed.aggregator_config, env={})
    state = {b: load_config(BankNodeConfig, p, env={}).state_dir
             for b, p in fed.bank_configs.items()}
    try:
        assert AggregatorService(
            agg_cfg, MemoryTransport(broker),
            metrics=AggregatorMetrics(new_registry(), federation="pers"),
        ).run() == 0
        # Each bank personalises the last model after it arrives: wait for its artifact.
        deadline = time.monotonic() + 60
        while any(load_artifact(state_dir / "model").version != 2
                  for state_dir in state.values()):
            assert time.monotonic() < deadline, "banks did not serve model v2"
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        torch.set_num_threads(threads_before)

    def value(bank: str, name: str, **labels: str) -> float | None:
        return registries[bank].get_sample_value(
            name, {"federation": "pers", "bank": bank, **labels}
        )

    served = load_artifact(state["bank_00"] / "model")
    assert served.version == 2 and served.personalization == "finetune"
    for kind in ("global", "personal"):
        auprc = value("bank_00", "fraudfl_bank_model_quality", model=kind, metric="auprc")
        assert auprc is not None and 0 < auprc <= 1
    assert value("bank_00", "fraudfl_bank_personalization_skipped_total",
                 reason="privacy_budget") == 0

    fallback = load_artifact(state["bank_01"] / "model")
    assert fallback.version == 2 and fallback.personalization == "none"
    # Models v1 and v2 (v0 is never personalised) were served without personalisation.
    assert value("bank_01", "fraudfl_bank_personalization_skipped_total",
                 reason="privacy_budget") == 2
    assert value("bank_01", "fraudfl_bank_rounds_joined_total", kind="stats") == 1
    assert value("bank_01", "fraudfl_bank_rounds_joined_total", kind="train") == 2
