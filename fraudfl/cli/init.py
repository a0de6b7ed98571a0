"""``fraudfl init DIR --banks N``: a ready-to-run federation directory.

Layout::

    DIR/README.md            how to start each process
    DIR/allowlist.json       every participant's Ed25519 and X25519 public keys
    DIR/keys/                <id>.key, <id>.enc.key (0600) and their .pub files
    DIR/data/                synthetic bank files, test.csv (the aggregator's held-out set), schema
    DIR/aggregator.toml
    DIR/banks/<bank>.toml
    DIR/state/               created by the services (checkpoints, accountants, models)

With ``--per-bank-kits`` no directory holds more than one participant's private key; DIR holds
one kit per participant, to hand over as a whole::

    DIR/allowlist.json             the consortium's public allowlist
    DIR/federation.json            the consortium's policy: what the aggregator will announce
    DIR/aggregator/                aggregator.toml, keys/ (its own keys only), data/, copies of
                                   allowlist.json and federation.json
    DIR/<bank>/                    bank.toml, keys/ (its own keys only), data/<bank>.csv and the
                                   schema, copies of allowlist.json and federation.json, README.md

Each kit's keys are generated into that kit alone. In production a bank generates its keys on
its own machine instead (``fraudfl keys generate``) and sends only the public halves; the
consortium enrols them (``fraudfl keys enroll``) and redistributes allowlist.json.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fraudfl.errors import FraudflError
from fraudfl.identity import Allowlist, Identity

log = logging.getLogger(__name__)

AGGREGATOR_ID = "aggregator"
TomlValue = str | int | float | bool | list[int] | None
PERSONALIZATION_METHODS = ("none", "finetune", "ditto", "fedper")
# FedPer keeps the output layer at each bank: the aggregator averages the body only.
FEDPER_PERSONAL_LAYERS = 1


@dataclass
class FederationPlan:
    """What ``init`` writes; ``demo`` and the tests build on the same function."""

    directory: Path
    banks: int = 3
    transactions: int = 20_000
    federation_id: str = "demo"
    bootstrap_servers: str = "127.0.0.1:9092"
    rounds: int = 5
    min_banks: int = 2
    seed: int = 0
    # Bank sizes follow a power law with this exponent (0: equal sizes).
    size_power_law: float = 1.2
    # The model each bank serves: the global one, or fine-tuned, Ditto or FedPer (a property of
    # the federation: the aggregator's `[training] personal_layers`).
    personalization: str = "none"
    # Real-export style data: missing values, hashed ids, heavy tails, a time column.
    messy: bool = False
    # Loopback port of the aggregator's admin endpoint (fraudfl admin); None: disabled.
    admin_port: int | None = None
    # One self-contained kit per participant instead of one directory with every key.
    per_bank_kits: bool = False
    # Extra settings per TOML section, merged over the defaults below.
    aggregator_overrides: dict[str, dict[str, TomlValue]] = field(default_factory=dict)
    bank_overrides: dict[str, dict[str, TomlValue]] = field(default_factory=dict)


@dataclass(frozen=True)
class Federation:
    directory: Path
    aggregator_config: Path
    bank_configs: dict[str, Path]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "init",
        help="write a ready-to-run federation directory (keys, allowlist, configs, data)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("directory", type=Path, help="directory to create (must be empty or absent)")
    p.add_argument("--banks", type=int, default=3, help="number of banks (default: 3)")
    p.add_argument(
        "--transactions", type=int, default=20_000, help="synthetic rows in total (default: 20000)"
    )
    p.add_argument("--federation-id", default="demo", help="federation id (default: demo)")
    p.add_argument(
        "--bootstrap-servers",
        default="127.0.0.1:9092",
        help="Kafka bootstrap servers written into the configs (default: 127.0.0.1:9092)",
    )
    p.add_argument("--rounds", type=int, default=5, help="rounds to run (default: 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default: 0)")
    p.add_argument("--messy", action="store_true",
                   help="real-export style synthetic data: missing values, hashed merchant and "
                        "device ids, heavy tails, a time column (docs/data.md)")
    p.add_argument("--per-bank-kits", action="store_true",
                   help="write one kit per participant (its own keys, config, data, the public "
                        "allowlist and policy) instead of one directory holding every key")
    p.add_argument("--admin-port", type=int, default=None,
                   help="loopback port of the aggregator's admin endpoint (fraudfl admin); "
                        "default: disabled")
    add_personalization_argument(p)
    p.set_defaults(func=run)


def add_personalization_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--personalization", choices=PERSONALIZATION_METHODS, default="none",
        help="the model each bank serves: none (the global model), finetune, ditto, or fedper "
        f"(the last {FEDPER_PERSONAL_LAYERS} layer stays at each bank; only the body is "
        "aggregated) (default: none)",
    )


def run(args: argparse.Namespace) -> int:
    fed = write_federation(
        FederationPlan(
            directory=args.directory,
            banks=args.banks,
            transactions=args.transactions,
            federation_id=args.federation_id,
            bootstrap_servers=args.bootstrap_servers,
            rounds=args.rounds,
            seed=args.seed,
            personalization=args.personalization,
            admin_port=args.admin_port,
            per_bank_kits=args.per_bank_kits,
            messy=args.messy,
        )
    )
    banks = len(fed.bank_configs)
    print(f"wrote federation {args.federation_id!r} with {banks} banks to {fed.directory}")
    print(f"see {fed.directory / 'README.md'} for how to start it")
    return 0


def write_federation(plan: FederationPlan) -> Federation:
    # Imported here so that `fraudfl --help` does not pay for pandas and the crypto stack.
    from fraudfl.config import AggregatorConfig, BankNodeConfig, check_settings
    from fraudfl.data.generators.banks import generate_bank_data
    from fraudfl.data.loading import find_data_files
    from fraudfl.transport.sealing import EncryptionKey

    root = plan.directory
    if plan.banks < 2:
        raise FraudflError(f"--banks must be at least 2, got {plan.banks}")
    if plan.min_banks > plan.banks:
        raise FraudflError(f"min_banks {plan.min_banks} exceeds the number of banks {plan.banks}")
    if plan.personalization not in PERSONALIZATION_METHODS:
        raise FraudflError(
            f"personalization must be one of {', '.join(PERSONALIZATION_METHODS)}, "
            f"got {plan.personalization!r}"
        )
    # The configs are checked before anything is written: a flag value a service would refuse
    # (--rounds 0, a federation id with a space) must not leave a federation that cannot start.
    check_settings(AggregatorConfig, _flatten(_aggregator_sections(plan, "test.csv")),
                   str(root / "aggregator.toml"))
    check_settings(BankNodeConfig, _flatten(_bank_sections(plan, "bank_00", "bank_00.csv")),
                   str(root / "banks" / "<bank>.toml"))
    if root.exists() and not root.is_dir():
        raise FraudflError(f"{root}: exists and is not a directory")
    if root.exists() and any(root.iterdir()):
        raise FraudflError(f"{root}: directory is not empty; choose a new one")
    root.mkdir(parents=True, exist_ok=True)
    data_dir = generate_bank_data(
        root / "data",
        n_banks=plan.banks,
        total_transactions=plan.transactions,
        seed=plan.seed,
        size_power_law=plan.size_power_law,
        messy=plan.messy,
    )
    bank_files, test_file = find_data_files(data_dir)
    allow = Allowlist()
    for pid in [AGGREGATOR_ID, *bank_files]:
        keys = root / pid / "keys" if plan.per_bank_kits else root / "keys"
        ident = Identity.generate(pid)
        enc = EncryptionKey.generate(pid)
        ident.save(keys)
        enc.save(keys)
        allow.enroll(pid, ident.public_bytes, "aggregator" if pid == AGGREGATOR_ID else "bank")
        allow.enroll_encryption_key(pid, enc.public_bytes)
    allow.save(root / "allowlist.json")
    if plan.per_bank_kits:
        return _write_kits(plan, root, data_dir, bank_files, test_file)

    agg_path = root / "aggregator.toml"
    agg_path.write_text(
        _toml(_aggregator_sections(plan, test_file.name if test_file else None))
    )
    bank_paths: dict[str, Path] = {}
    (root / "banks").mkdir(exist_ok=True)
    for bank_id, data_path in bank_files.items():
        path = root / "banks" / f"{bank_id}.toml"
        path.write_text(_toml(_bank_sections(plan, bank_id, data_path.name)))
        bank_paths[bank_id] = path
    (root / "README.md").write_text(_readme(plan, list(bank_paths)))
    log.info("wrote federation %s to %s", plan.federation_id, root)
    return Federation(root, agg_path, bank_paths)


def _write_kits(
    plan: FederationPlan, root: Path, data_dir: Path, bank_files: Mapping[str, Path],
    test_file: Path | None,
) -> Federation:
    """Move what ``write_federation`` generated into one kit per participant."""
    import shutil

    policy = _policy(plan)
    (root / "federation.json").write_text(json.dumps(policy, indent=2) + "\n")
    kits = [AGGREGATOR_ID, *bank_files]
    for pid in kits:
        (root / pid / "data").mkdir(parents=True, exist_ok=True)
        shutil.copy2(data_dir / "schema.toml", root / pid / "data" / "schema.toml")
        for public in ("allowlist.json", "federation.json"):
            shutil.copy2(root / public, root / pid / public)
    agg_path = root / AGGREGATOR_ID / "aggregator.toml"
    if test_file is not None:
        shutil.move(test_file, root / AGGREGATOR_ID / "data" / test_file.name)
    agg_path.write_text(_toml(_kit_paths(
        _aggregator_sections(plan, test_file.name if test_file else None), AGGREGATOR_ID)))
    bank_paths: dict[str, Path] = {}
    for bank_id, data_path in bank_files.items():
        kit = root / bank_id
        shutil.move(data_path, kit / "data" / data_path.name)
        path = kit / "bank.toml"
        path.write_text(_toml(_kit_paths(_bank_sections(plan, bank_id, data_path.name),
                                         bank_id)))
        (kit / "README.md").write_text(_kit_readme(plan, bank_id))
        bank_paths[bank_id] = path
    shutil.rmtree(data_dir)
    (root / "README.md").write_text(
        f"# Federation `{plan.federation_id}`: one kit per participant\n\n"
        "Hand each directory to its participant, and nothing else: each holds only its own "
        "private keys. `allowlist.json` and `federation.json` here are public.\n"
    )
    log.info("wrote %d kits of federation %s to %s", len(kits), plan.federation_id, root)
    return Federation(root, agg_path, bank_paths)


def _kit_paths(
    sections: dict[str, dict[str, TomlValue]], pid: str
) -> dict[str, dict[str, TomlValue]]:
    """Paths relative to the participant's kit directory."""
    top = sections[""]
    top["identity_key"] = f"keys/{pid}.key"
    top["encryption_key"] = f"keys/{pid}.enc.key"
    top["allowlist"] = "allowlist.json"
    top["state_dir"] = "state"
    if "data" in top:
        top["data"] = f"data/{Path(str(top['data'])).name}"
    for key in ("schema_file", "eval_data"):
        if top.get(key) is not None:
            top[key] = f"data/{Path(str(top[key])).name}"
    return sections


def _policy(plan: FederationPlan) -> dict[str, Any]:
    """What every bank agrees to: the aggregator's announced settings, from its config."""
    sections = _aggregator_sections(plan, None)
    return {
        "federation_id": plan.federation_id,
        "aggregator_id": AGGREGATOR_ID,
        "rounds": sections["rounds"],
        "training": sections["training"],
        "strategy": sections["strategy"],
        "secagg": sections["secagg"],
        "bank_privacy": _bank_sections(plan, "bank_00", "bank_00.csv")["privacy"],
    }


def _kit_readme(plan: FederationPlan, bank_id: str) -> str:
    return f"""# {bank_id}: kit for federation `{plan.federation_id}`

```bash
fraudfl preflight --config bank.toml
fraudfl bank-node --config bank.toml
```

`keys/` holds this bank's private keys (0600) and nobody else's; `allowlist.json` the
consortium's public keys; `federation.json` the settings the aggregator announces (review them:
they spend this bank's privacy budget); `data/` this bank's transactions. The node keeps its
privacy ledger and checkpoints in `state/`: back it up (docs/operations.md).
"""


def _aggregator_sections(
    plan: FederationPlan, test_file: str | None
) -> dict[str, dict[str, TomlValue]]:
    sections: dict[str, dict[str, TomlValue]] = {
        "": {
            "federation_id": plan.federation_id,
            "aggregator_id": AGGREGATOR_ID,
            "identity_key": f"keys/{AGGREGATOR_ID}.key",
            "encryption_key": f"keys/{AGGREGATOR_ID}.enc.key",
            "allowlist": "allowlist.json",
            "state_dir": f"state/{AGGREGATOR_ID}",
            "schema_file": "data/schema.toml",
            "eval_data": f"data/{test_file}" if test_file else None,
            "admin_port": plan.admin_port,
        },
        "kafka": {"bootstrap_servers": plan.bootstrap_servers},
        "rounds": {"rounds": plan.rounds, "min_banks": plan.min_banks, "seed": plan.seed},
        "training": {
            "local_epochs": 1, "batch_size": 128, "lr": 0.5, "mu": 0.01,
            "personal_layers": FEDPER_PERSONAL_LAYERS if plan.personalization == "fedper" else 0,
        },
        "strategy": {"name": "fedprox"},
        "secagg": {"clip_range": 0.5},
    }
    return _merge(sections, plan.aggregator_overrides)


def _bank_sections(
    plan: FederationPlan, bank_id: str, data_file: str
) -> dict[str, dict[str, TomlValue]]:
    from fraudfl.config import PrivacySettings

    sections: dict[str, dict[str, TomlValue]] = {
        "": {
            "federation_id": plan.federation_id,
            "bank_id": bank_id,
            "aggregator_id": AGGREGATOR_ID,
            "identity_key": f"../keys/{bank_id}.key",
            "encryption_key": f"../keys/{bank_id}.enc.key",
            "allowlist": "../allowlist.json",
            "data": f"../data/{data_file}",
            "state_dir": f"../state/{bank_id}",
            "personalization": plan.personalization,
        },
        "kafka": {"bootstrap_servers": plan.bootstrap_servers},
        "privacy": {
            "target_epsilon": 8.0,
            "max_grad_norm": PrivacySettings().max_grad_norm,
            "planned_rounds": plan.rounds,
        },
    }
    return _merge(sections, plan.bank_overrides)


def _flatten(sections: Mapping[str, Mapping[str, TomlValue]]) -> dict[str, Any]:
    """The nested mapping a TOML file of these sections parses to (None values omitted)."""
    out: dict[str, Any] = {}
    for section, values in sections.items():
        kept = {k: v for k, v in values.items() if v is not None}
        if section:
            out[section] = kept
        else:
            out.update(kept)
    return out


def _merge(
    base: Mapping[str, dict[str, TomlValue]], extra: Mapping[str, dict[str, TomlValue]]
) -> dict[str, dict[str, TomlValue]]:
    out = {k: dict(v) for k, v in base.items()}
    for section, values in extra.items():
        out.setdefault(section, {}).update(values)
    return out


def _toml(sections: Mapping[str, Mapping[str, TomlValue]]) -> str:
    """TOML for flat sections; JSON string and list syntax is valid TOML for these values."""
    lines: list[str] = []
    for section in sorted(sections, key=lambda s: (s != "", s)):
        values = {k: v for k, v in sections[section].items() if v is not None}
        if section:
            lines.append(f"\n[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def _readme(plan: FederationPlan, banks: list[str]) -> str:
    bank_lines = "\n".join(f"fraudfl bank-node --config banks/{b}.toml &" for b in banks)
    return f"""# Federation `{plan.federation_id}`

Written by `fraudfl init`. Start a Kafka broker reachable at `{plan.bootstrap_servers}` (for a
local one: `fraudfl broker --port {plan.bootstrap_servers.rsplit(":", 1)[-1]}`), then, from this
directory, one process each:

```bash
fraudfl aggregator --config aggregator.toml &
{bank_lines}
```

Keys are in `keys/` (private keys 0600; never copy another participant's), the aggregator's
enrolment list in `allowlist.json`, each service's state in `state/<id>/`. Override any config
value with an environment variable, e.g. `FRAUDFL_KAFKA__BOOTSTRAP_SERVERS=host:9092`.
"""
