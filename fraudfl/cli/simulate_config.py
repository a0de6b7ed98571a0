"""``fraudfl simulate --config FILE``: the services' settings sections as simulation flags.

The file holds the sections an aggregator's and a bank node's TOML files hold (``rounds``,
``training``, ``strategy``, ``secagg``, ``bank_dp``, ``features``, ``privacy``,
``personal_training``; other keys, such as paths and Kafka, are ignored here). Each section is
validated by the same pydantic model the services use; a flag given on the command line
overrides the file, and what neither sets takes the services' defaults.
"""

from __future__ import annotations

import argparse
import logging
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from fraudfl.config import (
    BankDPSettings,
    FeatureSettings,
    PersonalTrainingSettings,
    PrivacySettings,
    RoundSettings,
    SecAggSettings,
    StrategySettings,
    TrainingSettings,
    TreeSettings,
)
from fraudfl.errors import FraudflError
from fraudfl.simulation import SimulationConfig

log = logging.getLogger(__name__)

_SECTIONS: dict[str, type[BaseModel]] = {
    "rounds": RoundSettings,
    "training": TrainingSettings,
    "strategy": StrategySettings,
    "secagg": SecAggSettings,
    "bank_dp": BankDPSettings,
    "features": FeatureSettings,
    "privacy": PrivacySettings,
    "personal_training": PersonalTrainingSettings,
    "trees": TreeSettings,
}

# flag (argparse dest) -> (section, key) of the services' configuration.
_FLAGS: dict[str, tuple[str, str]] = {
    "rounds": ("rounds", "rounds"),
    "banks_per_round": ("rounds", "banks_per_round"),
    "seed": ("rounds", "seed"),
    "model": ("training", "model"),
    "hidden": ("training", "hidden"),
    "local_epochs": ("training", "local_epochs"),
    "batch_size": ("training", "batch_size"),
    "lr": ("training", "lr"),
    "mu": ("training", "mu"),
    "max_steps": ("training", "max_steps"),
    "pos_weight": ("training", "pos_weight"),
    "focal_gamma": ("training", "focal_gamma"),
    "strategy": ("strategy", "name"),
    "server_lr": ("strategy", "server_lr"),
    "server_momentum": ("strategy", "momentum"),
    "eta": ("strategy", "eta"),
    "beta1": ("strategy", "beta1"),
    "beta2": ("strategy", "beta2"),
    "tau": ("strategy", "tau"),
    "secure_aggregation": ("secagg", "enabled"),
    "secagg_neighbours": ("secagg", "neighbours"),
    "personal_epochs": ("personal_training", "epochs"),
    "ditto_lambda": ("personal_training", "ditto_lambda"),
}
# The [trees] section goes to the tree flags' settings whole (fraudfl.cli.simulate.tree_settings):
# the flags name only some of its keys.

# Flags that are plain values in argparse but settings in the file: when neither the file nor
# the command line sets them, the simulation's defaults (themselves the services' settings).
_SIMULATION = SimulationConfig()
_DEFAULTS: dict[str, Any] = {
    "rounds": _SIMULATION.rounds,
    "banks_per_round": _SIMULATION.banks_per_round,
    "seed": _SIMULATION.seed,
    "strategy": _SIMULATION.strategy,
    "model": _SIMULATION.model,
    "hidden": _SIMULATION.hidden,
    "local_epochs": _SIMULATION.local_epochs,
    "batch_size": _SIMULATION.batch_size,
    "lr": _SIMULATION.lr,
    "secure_aggregation": _SIMULATION.secure_aggregation,
    "no_standardize": not _SIMULATION.standardize,
}


def read_settings(path: Path) -> dict[str, BaseModel]:
    """The known sections of ``path``, each validated by its services' model."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FraudflError(f"{path}: cannot read config file: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FraudflError(f"{path}: not valid TOML ({exc})") from exc
    out: dict[str, BaseModel] = {}
    for name, model in _SECTIONS.items():
        if name not in raw:
            continue
        try:
            out[name] = model.model_validate(raw[name])
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in (name, *err["loc"]))
            raise FraudflError(f"{path}: {key}: {err['msg']} (got {err.get('input')!r})") from exc
    return out


def apply_config_file(args: argparse.Namespace) -> None:
    """Fill the flags left unset from ``args.config`` (fields the file sets explicitly), then
    from the services' defaults. Dependent flags (``--mu`` without FedProx, ...) are set from
    the file only where they apply, since a service's file carries every section."""
    sections = {} if args.config is None else read_settings(args.config)
    given = {name: section.model_fields_set for name, section in sections.items()}
    from_file: set[str] = set()
    for dest, (section, key) in _FLAGS.items():
        if getattr(args, dest, None) is not None or key not in given.get(section, set()):
            continue
        setattr(args, dest, getattr(sections[section], key))
        from_file.add(dest)
    features = sections.get("features")
    if args.no_standardize is None and features is not None:
        args.no_standardize = not features.standardize  # type: ignore[attr-defined]
    privacy = sections.get("privacy")
    if privacy is not None and privacy.enabled:  # type: ignore[attr-defined]
        for dest in ("target_epsilon", "delta", "noise_multiplier", "max_grad_norm",
                     "accountant"):
            if getattr(args, dest) is None and dest in privacy.model_fields_set:
                setattr(args, dest, getattr(privacy, dest))
        if args.dp_engine is None and "engine" in privacy.model_fields_set:
            args.dp_engine = privacy.engine  # type: ignore[attr-defined]
    secagg = sections.get("secagg")
    if secagg is not None and "clip_range" in secagg.model_fields_set:
        # No flag: the quantisation range is a federation setting only a file sets.
        args.secagg_clip_range = secagg.clip_range  # type: ignore[attr-defined]
    trees = sections.get("trees")
    args.tree_file = {} if trees is None else trees.model_dump(include=trees.model_fields_set)
    bank_dp = sections.get("bank_dp")
    if bank_dp is not None and bank_dp.enabled:  # type: ignore[attr-defined]
        if args.bank_dp_clip is None:
            args.bank_dp_clip = bank_dp.clip_norm  # type: ignore[attr-defined]
        if args.bank_dp_noise is None:
            args.bank_dp_noise = bank_dp.noise_multiplier  # type: ignore[attr-defined]
    for dest, default in _DEFAULTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, default)
    _drop_inapplicable(args, from_file)


def _drop_inapplicable(args: argparse.Namespace, from_file: set[str]) -> None:
    """A value that came from the file for a setting the run does not use is cleared (the
    command-line check refuses only flags given without their setting)."""
    strategy = args.strategy
    applies = {
        "mu": strategy == "fedprox",
        "server_lr": strategy == "fedavgm",
        "server_momentum": strategy == "fedavgm",
        "eta": strategy in ("fedadam", "fedyogi"),
        "beta1": strategy in ("fedadam", "fedyogi"),
        "beta2": strategy in ("fedadam", "fedyogi"),
        "tau": strategy in ("fedadam", "fedyogi"),
        "personal_epochs": args.personalization in ("finetune", "ditto"),
        "ditto_lambda": args.personalization == "ditto",
        "secagg_neighbours": bool(args.secure_aggregation),
    }
    for dest, ok in applies.items():
        if dest in from_file and not ok:
            setattr(args, dest, None)
