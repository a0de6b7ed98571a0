"""An in-memory federation of the sans-IO pieces: the real Orchestrator, BankParticipants,
SecAgg client/server and (DP) training on a tiny synthetic dataset; messages are passed by hand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fraudfl.config import AggregatorConfig, BankNodeConfig
from fraudfl.data.generators.banks import generate_bank_data
from fraudfl.data.loading import find_data_files, load_bank_file
from fraudfl.data.schema import load_schema
from fraudfl.identity import Allowlist, Identity
from fraudfl.privacy.accountant import PrivacyAccountant, PrivacyBudget
from fraudfl.rounds.messages import MODEL, decode_model
from fraudfl.rounds.orchestrator import Orchestrator, Outbound
from fraudfl.rounds.participant import BankParticipant, Reply
from fraudfl.rounds.policy import ConsortiumPolicy


@dataclass
class Federation:
    root: Path
    agg_config: AggregatorConfig
    bank_configs: dict[str, BankNodeConfig]
    agg_identity: Identity
    identities: dict[str, Identity]
    allowlist: Allowlist
    orchestrator: Orchestrator
    banks: dict[str, BankParticipant]
    now: float = 0.0
    models: list[tuple[Any, np.ndarray]] = field(default_factory=list)
    # bank -> predicate(outbound, replies) returning False to drop the bank's replies (dropout)
    drop: dict[str, Callable[[Reply], bool]] = field(default_factory=dict)
    dead: set[str] = field(default_factory=set)
    transcript: list[Outbound] = field(default_factory=list)
    # (bank, round) -> the bank's plain contribution, recorded in the test process only.
    inputs: dict[tuple[str, int], tuple[np.ndarray, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for bank_id, participant in self.banks.items():
            def record(rnd: int, update: np.ndarray, weight: float, bank: str = bank_id) -> None:
                self.inputs[(bank, rnd)] = (update.copy(), weight)
            participant.on_input = record

    def new_orchestrator(self) -> Orchestrator:
        schema = load_schema(self.agg_config.schema_file)
        return Orchestrator(self.agg_config, self.agg_identity, self.allowlist, schema)

    def deliver(self, out: list[Outbound]) -> list[tuple[str, Reply]]:
        replies: list[tuple[str, Reply]] = []
        for msg in out:
            self.transcript.append(msg)
            if msg.payload_type == MODEL:
                self.models.append(decode_model(msg.payload))
            targets = self.banks if msg.recipient == "*" else [msg.recipient]
            for bank_id in targets:
                if bank_id in self.dead:
                    continue
                for reply in self.banks[bank_id].receive(msg.payload_type, msg.payload):
                    rule = self.drop.get(bank_id)
                    if rule is not None and rule(reply):
                        self.dead.add(bank_id)
                        break
                    replies.append((bank_id, reply))
        return replies

    def pump(self, out: list[Outbound], max_events: int = 10_000) -> None:
        """Deliver until the orchestrator finishes, advancing the clock past deadlines."""
        queue = list(out)
        for _ in range(max_events):
            if self.orchestrator.finished and not queue:
                return
            if not queue:
                deadline = self.orchestrator.deadline()
                assert deadline is not None, "stalled without a deadline"
                self.now = deadline + 0.001
                queue = self.orchestrator.timeout(self.now)
                continue
            replies = self.deliver(queue)
            queue = []
            for bank_id, reply in replies:
                self.now += 0.001
                queue += self.orchestrator.receive(
                    bank_id, reply.round, reply.payload_type, reply.payload, self.now
                )
        raise AssertionError("federation did not finish")

    def plain_updates(self, bank_id: str, round_number: int) -> tuple[np.ndarray, float] | None:
        return self.inputs.get((bank_id, round_number))


def make_federation(
    tmp_path: Path,
    n_banks: int = 3,
    *,
    rounds: int = 2,
    privacy: bool = False,
    target_epsilon: float = 8.0,
    planned_rounds: int = 2,
    agg_overrides: dict[str, Any] | None = None,
    transactions: int | None = None,
    noise_multiplier: float | None = None,
    bank_overrides: dict[str, Any] | None = None,
    policy: ConsortiumPolicy | None = None,
) -> Federation:
    data_dir = generate_bank_data(
        tmp_path / "data", n_banks=n_banks, total_transactions=transactions or 300 * n_banks,
        seed=1, fraud_rate=0.018,
    )
    files, _ = find_data_files(data_dir)
    schema = load_schema(data_dir / "schema.toml")
    agg_identity = Identity.generate("aggregator")
    identities = {b: Identity.generate(b) for b in files}
    allow = Allowlist()
    allow.enroll(agg_identity.participant_id, agg_identity.public_bytes, "aggregator")
    for ident in identities.values():
        allow.enroll(ident.participant_id, ident.public_bytes, "bank")
    keyfile = tmp_path / "unused.key"
    keyfile.write_text("")
    common = {
        "federation_id": "test",
        "identity_key": keyfile,
        "encryption_key": keyfile,
        "allowlist": keyfile,
    }
    agg_raw: dict[str, Any] = {
        **common,
        "state_dir": tmp_path / "agg",
        "schema_file": data_dir / "schema.toml",
        "rounds": {"rounds": rounds, "min_banks": 2},
        "training": {"hidden": [8], "batch_size": 64, "lr": 0.1, "mu": 0.01},
        "secagg": {"clip_range": 4.0, "weight_scale": 1000.0},
        "timeouts": {"advertise_keys": 5, "share_keys": 5, "masked_input": 5,
                     "consistency_check": 5, "unmask": 5},
    }
    for key, value in (agg_overrides or {}).items():
        if isinstance(value, dict):
            agg_raw.setdefault(key, {}).update(value)
        else:
            agg_raw[key] = value
    agg_config = AggregatorConfig.model_validate(agg_raw)
    bank_configs: dict[str, BankNodeConfig] = {}
    banks: dict[str, BankParticipant] = {}
    for bank_id, path in files.items():
        cfg = BankNodeConfig.model_validate({
            **common,
            "bank_id": bank_id,
            "data": path,
            "state_dir": tmp_path / bank_id,
            "privacy": {
                "enabled": privacy,
                "target_epsilon": target_epsilon,
                "planned_rounds": planned_rounds,
                "noise_multiplier": noise_multiplier,
            },
            **(bank_overrides or {}),
        })
        bank_configs[bank_id] = cfg
        frame = load_bank_file(path, schema)
        accountant = PrivacyAccountant(
            budget=PrivacyBudget(target_epsilon, 1e-4), label=bank_id
        )
        banks[bank_id] = BankParticipant(
            cfg, identities[bank_id], allow, frame, schema, accountant, policy=policy,
            source=str(path),
        )
    orch = Orchestrator(agg_config, agg_identity, allow, schema)
    return Federation(
        tmp_path, agg_config, bank_configs, agg_identity, identities, allow, orch, banks
    )


