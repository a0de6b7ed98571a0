"""The test federation: the real Orchestrator, BankParticipants, SecAgg client/server and (DP)
training on a tiny synthetic dataset, driven by the library's in-memory grid."""

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
from fraudfl.rounds.engine import InMemoryGrid
from fraudfl.rounds.orchestrator import Orchestrator, Outbound
from fraudfl.rounds.participant import BankParticipant, Reply
from fraudfl.rounds.policy import ConsortiumPolicy


@dataclass
class Federation:
    """Configs, identities and state machines of a small federation, driven by the library's
    in-memory grid (the engine ``fraudfl simulate`` runs on)."""

    root: Path
    agg_config: AggregatorConfig
    bank_configs: dict[str, BankNodeConfig]
    agg_identity: Identity
    identities: dict[str, Identity]
    allowlist: Allowlist
    grid: InMemoryGrid
    models: list[tuple[Any, np.ndarray]] = field(default_factory=list)
    # (bank, round) -> the bank's plain contribution, recorded in the test process only.
    inputs: dict[tuple[str, int], tuple[np.ndarray, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.grid.on_model = lambda info, params: self.models.append((info, params))
        self.grid.transcript = []
        for bank_id, participant in self.banks.items():
            def record(rnd: int, update: np.ndarray, weight: float, bank: str = bank_id) -> None:
                self.inputs[(bank, rnd)] = (update.copy(), weight)
            participant.on_input = record

    # The grid's state, under the names the tests use.
    @property
    def orchestrator(self) -> Orchestrator:
        return self.grid.orchestrator

    @orchestrator.setter
    def orchestrator(self, orchestrator: Orchestrator) -> None:
        self.grid.orchestrator = orchestrator

    @property
    def banks(self) -> dict[str, BankParticipant]:
        return self.grid.banks  # type: ignore[return-value]

    @property
    def now(self) -> float:
        return self.grid.now

    @now.setter
    def now(self, value: float) -> None:
        self.grid.now = value

    @property
    def drop(self) -> dict[str, Callable[[Reply], bool]]:
        return self.grid.drop

    @property
    def dead(self) -> set[str]:
        return self.grid.dead

    @property
    def transcript(self) -> list[Outbound]:
        assert self.grid.transcript is not None
        return self.grid.transcript

    def new_orchestrator(self) -> Orchestrator:
        schema = load_schema(self.agg_config.schema_file)
        return Orchestrator(self.agg_config, self.agg_identity, self.allowlist, schema)

    def deliver(self, out: list[Outbound]) -> list[tuple[str, Reply]]:
        return self.grid.deliver(out)

    def pump(self, out: list[Outbound], max_events: int = 10_000) -> None:
        """Deliver until the orchestrator finishes, advancing the clock past deadlines."""
        self.grid.pump(out, max_events)

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
        tmp_path, agg_config, bank_configs, agg_identity, identities, allow,
        InMemoryGrid(orch, banks),
    )


