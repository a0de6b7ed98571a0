"""``fraudfl simulate``: the round engine over the in-memory grid, with research extras around it.

A simulation *is* the services minus Kafka: the aggregator's
:class:`~fraudfl.rounds.orchestrator.Orchestrator` and one
:class:`~fraudfl.rounds.participant.BankParticipant` per bank exchange their real messages
through :class:`~fraudfl.rounds.engine.InMemoryGrid`. The statistics round, the weight of an
update, the secure-aggregation threshold, the DP noise calibration and accounting, bank-level
DP's fixed denominator, FedPer and personal training are therefore the services' own code. With
``secagg.enabled`` the real SecAgg protocol runs; without it the same quantised sum is computed
in the clear (:mod:`fraudfl.secagg.plain`), which is bit-identical and much faster.

What sits around the engine, and only here:

- data: each bank's file is split into train and validation (``BankSettings.val_fraction``,
  ``split_seed``); a bank trains on its train split, as a bank node does;
- stragglers (``straggler_fraction``): per round, among the banks the orchestrator selected,
  ``k - round(k * (1 - fraction))`` do only part of the work (FedProx paper); a strategy that
  refuses partial work (everything but FedProx) loses them for that round;
- evaluation of every published model (global test set, each bank's validation split, the loss
  on all training data), baselines (local-only, pooled), per-round privacy report;
- personalisation compared per bank, and the final models written as scoring artifacts.

The results' JSON shape is documented in ``docs/simulation.md``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import torch
from pydantic import ValidationError

from fraudfl.config import (
    BankDPSettings,
    BankSettings,
    FeatureSettings,
    FederationSettings,
    PersonalTrainingSettings,
    PrivacySettings,
    RoundSettings,
    SecAggSettings,
    StrategySettings,
    TrainingSettings,
    TreeSettings,
)
from fraudfl.data import FederatedDataset
from fraudfl.data.pipeline import FeaturePipeline
from fraudfl.data.split import train_val_split
from fraudfl.data.stats import compute_stats
from fraudfl.errors import FraudflError
from fraudfl.identity import Allowlist, Identity
from fraudfl.models import MODEL_KINDS, ModelSpec, Task, get_flat_params, set_flat_params
from fraudfl.personalization import BankComparison, compare_on_bank
from fraudfl.privacy.accountant import (
    BudgetExhausted,
    PrivacyAccountant,
    PrivacyBudget,
    default_delta,
    warn_if_vacuous,
)
from fraudfl.privacy.options import PrivacyOptions
from fraudfl.rounds.engine import InMemoryGrid
from fraudfl.rounds.messages import ModelInfo
from fraudfl.rounds.orchestrator import Orchestrator
from fraudfl.rounds.participant import BankParticipant
from fraudfl.rounds.policy import ConsortiumPolicy, TaskPolicy, TrainBounds, TreeBounds
from fraudfl.strategy import STRATEGY_NAMES
from fraudfl.training.evaluation import evaluate, loss_only
from fraudfl.training.local import TrainConfig, train_local
from fraudfl.trees.ensemble import TreeEnsemble

log = logging.getLogger(__name__)

Baseline = Literal["none", "local", "centralized", "all"]
BASELINES: tuple[Baseline, ...] = ("none", "local", "centralized", "all")
PERSONALIZATIONS = ("none", "finetune", "ditto", "fedper")
Metrics = dict[str, float]
FEDERATION_ID = "simulation"
AGGREGATOR_ID = "aggregator"
# The secure-aggregation threshold t is at least this many banks (RoundSettings.min_banks).
MIN_BANKS = 2


@dataclass
class SimulationConfig:
    """Every knob of a simulation run (the CLI flags map one-to-one onto these fields).

    :meth:`federation_settings` and :meth:`bank_settings` turn it into the settings the
    services read from their configuration files: the engine sees nothing else.
    """

    strategy: str = "fedprox"
    mu: float = TrainingSettings().mu
    rounds: int = 10
    banks_per_round: int = 10
    local_epochs: int = TrainingSettings().local_epochs
    max_steps: int | None = None
    batch_size: int = TrainingSettings().batch_size
    lr: float = TrainingSettings().lr
    straggler_fraction: float = 0.0
    seed: int = 0
    model: str = "mlp"
    hidden: tuple[int, ...] = TrainingSettings().hidden
    val_fraction: float = BankSettings.model_fields["val_fraction"].default
    standardize: bool = True
    baseline: str = "none"
    pos_weight: float | None = None
    focal_gamma: float | None = None
    server_lr: float = StrategySettings().server_lr
    server_momentum: float = StrategySettings().momentum
    eta: float = StrategySettings().eta
    beta1: float = StrategySettings().beta1
    beta2: float = StrategySettings().beta2
    tau: float = StrategySettings().tau
    torch_threads: int | None = 1
    # Record-level DP-SGD and/or bank-level update DP (docs/privacy.md); None: no DP.
    privacy: PrivacyOptions | None = None
    # Secure aggregation: the real protocol (True) or the same sum in the clear (False).
    secure_aggregation: bool = False
    secagg_neighbours: int = 0
    secagg_clip_range: float = SecAggSettings().clip_range
    personalization: str = "none"
    personal_epochs: int = PersonalTrainingSettings().epochs
    ditto_lambda: float = PersonalTrainingSettings().ditto_lambda
    # FedPer: the last k linear layers stay at the banks (1 with personalization "fedper").
    personal_layers: int | None = None
    # The consortium policy's update weight: "constant" (every bank 1.0; the services'
    # default, so no example count leaves a bank) or "examples" (FedAvg's n_k / n weighting).
    update_weight: str = ConsortiumPolicy().update_weight
    # model "gbdt": the boosting job (the services' [trees] section).
    trees: TreeSettings = field(default_factory=TreeSettings)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGY_NAMES:
            raise FraudflError(f"strategy must be one of {STRATEGY_NAMES}, got {self.strategy!r}")
        if self.model not in (*MODEL_KINDS, "gbdt"):
            raise FraudflError(f"model must be one of {(*MODEL_KINDS, 'gbdt')}, got "
                               f"{self.model!r}")
        if self.model == "gbdt":
            self._check_trees()
        if self.baseline not in BASELINES:
            raise FraudflError(f"baseline must be one of {BASELINES}, got {self.baseline!r}")
        if self.personalization not in PERSONALIZATIONS:
            raise FraudflError(f"personalization must be one of {PERSONALIZATIONS}, got "
                               f"{self.personalization!r}")
        if self.rounds < 1:
            raise FraudflError(f"rounds must be >= 1, got {self.rounds}")
        if self.banks_per_round < MIN_BANKS:
            raise FraudflError(f"banks_per_round must be >= {MIN_BANKS} (a sum of one bank "
                               f"would be that bank's update), got {self.banks_per_round}")
        if not 0.0 <= self.straggler_fraction <= 1.0:
            raise FraudflError(
                f"straggler_fraction must be in [0, 1], got {self.straggler_fraction}"
            )
        if not 0.0 <= self.val_fraction < 1.0:
            raise FraudflError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise FraudflError(f"torch_threads must be >= 1, got {self.torch_threads}")
        if self.update_weight not in ("constant", "examples"):
            raise FraudflError(f"update_weight must be 'constant' or 'examples', got "
                               f"{self.update_weight!r}")
        if self.secagg_neighbours < 0:
            raise FraudflError(f"secure aggregation: neighbours must be >= 0 (0 = full graph), "
                               f"got {self.secagg_neighbours}")
        # Validates local_epochs, max_steps, batch_size, lr, mu the same way the trainer does.
        self.train_config("binary", mu=self.mu)

    def _check_trees(self) -> None:
        """What a tree job does not do (yet): refused rather than silently ignored."""
        unsupported = {
            "baseline": self.baseline != "none",
            "personalization": self.personalization != "none" or self.fedper_layers > 0,
            "straggler_fraction": self.straggler_fraction > 0,
            "bank-level DP": self.privacy is not None and self.privacy.bank_level,
        }
        for name, used in unsupported.items():
            if used:
                raise FraudflError(f"model gbdt: {name} is not supported for trees")

    def train_config(
        self, task: Task, *, mu: float, local_epochs: int | None = None
    ) -> TrainConfig:
        return TrainConfig(
            task=task,
            local_epochs=self.local_epochs if local_epochs is None else local_epochs,
            max_steps=self.max_steps,
            batch_size=self.batch_size,
            lr=self.lr,
            mu=mu,
            pos_weight=self.pos_weight,
            focal_gamma=self.focal_gamma,
        )

    @property
    def fedper_layers(self) -> int:
        if self.personal_layers is not None:
            return self.personal_layers
        return 1 if self.personalization == "fedper" else 0

    def federation_settings(self, num_banks: int, weight_scale: float) -> FederationSettings:
        """The aggregator's settings for this run (what its TOML file would hold)."""
        bank_dp = BankDPSettings()
        if self.privacy is not None and self.privacy.bank_level:
            assert self.privacy.bank_dp_clip is not None
            assert self.privacy.bank_dp_noise is not None
            bank_dp = BankDPSettings(
                enabled=True, clip_norm=self.privacy.bank_dp_clip,
                noise_multiplier=self.privacy.bank_dp_noise,
                delta=(self.privacy.bank_dp_delta if self.privacy.bank_dp_delta is not None
                       else default_delta(num_banks)),
            )
        try:
            return FederationSettings(
                federation_id=FEDERATION_ID,
                rounds=RoundSettings(
                    rounds=self.rounds, banks_per_round=min(self.banks_per_round, num_banks),
                    min_banks=MIN_BANKS, seed=self.seed,
                ),
                training=TrainingSettings(
                    model=self.model,  # type: ignore[arg-type]
                    hidden=self.hidden, local_epochs=self.local_epochs,
                    batch_size=self.batch_size, lr=self.lr, mu=self.mu,
                    max_steps=self.max_steps, pos_weight=self.pos_weight,
                    focal_gamma=self.focal_gamma, personal_layers=self.fedper_layers,
                ),
                strategy=StrategySettings(
                    name=self.strategy,  # type: ignore[arg-type]
                    server_lr=self.server_lr, momentum=self.server_momentum, eta=self.eta,
                    beta1=self.beta1, beta2=self.beta2, tau=self.tau,
                ),
                secagg=SecAggSettings(
                    enabled=self.secure_aggregation, neighbours=self.secagg_neighbours,
                    clip_range=self.secagg_clip_range, weight_scale=weight_scale,
                ),
                bank_dp=bank_dp,
                features=FeatureSettings(standardize=self.standardize),
                # Banks under DP do not release label counts: the job starts from base_score.
                trees=self.trees.model_copy(update={"label_counts": False})
                if self.privacy is not None and self.privacy.record_level else self.trees,
            )
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise FraudflError(f"simulation settings: {exc.title}.{where}: {err['msg']} "
                               f"(got {err.get('input')!r})") from exc

    def bank_settings(self, bank_id: str) -> BankSettings:
        """One bank's settings (what its bank-node TOML file would hold)."""
        opts = self.privacy
        privacy = PrivacySettings(enabled=False)
        if opts is not None and opts.record_level:
            privacy = PrivacySettings(
                enabled=True, target_epsilon=opts.target_epsilon, delta=opts.delta,
                noise_multiplier=opts.noise_multiplier, max_grad_norm=opts.max_grad_norm,
                accountant=opts.accountant, planned_rounds=self.rounds, engine=opts.engine,
            )
        return BankSettings(
            federation_id=FEDERATION_ID, bank_id=bank_id, aggregator_id=AGGREGATOR_ID,
            privacy=privacy,
            personalization="fedper" if self.fedper_layers else self.personalization,  # type: ignore[arg-type]
            personal_training=PersonalTrainingSettings(
                epochs=self.personal_epochs, ditto_lambda=self.ditto_lambda,
            ),
            val_fraction=self.val_fraction, split_seed=self.seed, allow_plain_sum=True,
        )

    def policy(self) -> ConsortiumPolicy:
        """The consortium policy every simulated bank holds: the services' defaults, with the
        configured update weight and room for every planned round in one sitting."""
        default = ConsortiumPolicy()
        bounds = TrainBounds()
        # The consortium of a simulated run agreed to the run's own training settings.
        train = TrainBounds(
            local_epochs=(1, max(bounds.local_epochs[1], self.local_epochs)),
            batch_size=(min(bounds.batch_size[0], self.batch_size),
                        max(bounds.batch_size[1], self.batch_size)),
            lr=(min(bounds.lr[0], self.lr), max(bounds.lr[1], self.lr)),
            mu=(0.0, max(bounds.mu[1], self.mu)),
            max_rounds=max(bounds.max_rounds, self.rounds + 1),
        )
        # ... and to its tree job: a round per level and one for the leaves of every tree.
        t, tb = self.trees, TreeBounds()
        trees = TreeBounds(
            n_estimators=(1, max(tb.n_estimators[1], t.n_estimators)),
            max_depth=(1, max(tb.max_depth[1], t.max_depth)),
            learning_rate=(min(tb.learning_rate[0], t.learning_rate),
                           max(tb.learning_rate[1], t.learning_rate)),
            reg_lambda=(0.0, max(tb.reg_lambda[1], t.reg_lambda)),
            min_child_weight=(0.0, max(tb.min_child_weight[1], t.min_child_weight)),
            subsample=(min(tb.subsample[0], t.subsample), 1.0),
            colsample_bytree=(min(tb.colsample_bytree[0], t.colsample_bytree), 1.0),
        )
        rounds = max(self.rounds, t.n_estimators * (t.max_depth + 1) + 2)
        return ConsortiumPolicy(
            update_weight=self.update_weight,  # type: ignore[arg-type]
            max_rounds_per_day=max(default.max_rounds_per_day, rounds + 1),
            min_neighbours=self.secagg_neighbours if self.secure_aggregation else 0,
            tasks=TaskPolicy(train=train, trees=trees),
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hidden"] = list(self.hidden)
        data.pop("privacy")
        data["trees"] = self.trees.model_dump() if self.model == "gbdt" else None
        return data


@dataclass
class BankSplit:
    """One bank's rows: what it trains on and what it validates on."""

    bank_id: str
    train: pd.DataFrame
    val: pd.DataFrame


@dataclass
class BankData:
    bank_id: str
    X_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int64]
    X_val: npt.NDArray[np.float32]
    y_val: npt.NDArray[np.int64]


@dataclass
class PreparedData:
    """Feature matrices for every bank and for the evaluation set, under one pipeline."""

    task: Task
    num_classes: int
    pipeline: FeaturePipeline
    banks: list[BankData]
    X_test: npt.NDArray[np.float32]
    y_test: npt.NDArray[np.int64]
    test_source: str  # "test" (the dataset's test file) or "banks_val"

    @property
    def num_features(self) -> int:
        return self.pipeline.num_features


@dataclass
class RoundRecord:
    round: int
    global_metrics: Metrics
    banks: dict[str, Metrics]
    seconds: float
    participants: list[str]
    stragglers: list[str]
    dropped: list[str]
    # Banks that declined the round (privacy budget, policy).
    declined: list[str] = field(default_factory=list)
    # With DP: "epsilon" per bank (record level), "federation_epsilon", "declined".
    privacy: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"round": self.round, "global": self.global_metrics, "banks": self.banks,
                **self.privacy}


@dataclass
class SimulationResult:
    config: dict[str, Any]
    task: Task
    rounds: list[RoundRecord]
    final: dict[str, Any]
    startup_seconds: float
    final_params: npt.NDArray[np.float32] = field(repr=False)
    spec: ModelSpec | None = None
    pipeline: FeaturePipeline | None = None
    # Each bank's personal model (personalisation runs only).
    personal_params: dict[str, npt.NDArray[np.float32]] = field(default_factory=dict)
    # model "gbdt": the final published ensemble (final_params is then empty).
    ensemble: TreeEnsemble | None = None

    def to_json(self) -> dict[str, Any]:
        """The documented results shape, with NaN written as ``null``."""
        out: dict[str, Any] = _json_safe(
            {
                "config": self.config,
                "rounds": [r.to_json() for r in self.rounds],
                "final": self.final,
            }
        )
        return out


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def split_banks(dataset: FederatedDataset, val_fraction: float, seed: int) -> list[BankSplit]:
    """Each bank's train/validation split, exactly as a bank node splits its file."""
    if not dataset.banks:
        raise FraudflError(f"{dataset.root}: the dataset has no bank files")
    out = []
    for bank_id, frame in dataset.banks.items():
        train, val = train_val_split(frame, dataset.schema, val_fraction, seed=seed)
        if len(train) == 0:
            raise FraudflError(
                f"{dataset.root}: bank '{bank_id}' has {len(frame)} row(s), too few to split "
                f"off a validation set of {val_fraction:.0%}"
            )
        out.append(BankSplit(bank_id, train, val))
    if len(out) < MIN_BANKS:
        raise FraudflError(f"{dataset.root}: {len(out)} bank file(s); a federation needs at "
                           f"least {MIN_BANKS}")
    return out


def transform_data(
    dataset: FederatedDataset, splits: list[BankSplit], pipeline: FeaturePipeline
) -> PreparedData:
    """Every bank's matrices and the evaluation set under the federation's pipeline."""
    banks = []
    for s in splits:
        X_train, y_train = pipeline.transform(s.train, source=f"{s.bank_id} (train)")
        X_val, y_val = pipeline.transform(s.val, source=f"{s.bank_id} (validation)")
        banks.append(BankData(s.bank_id, X_train, y_train.astype(np.int64), X_val,
                              y_val.astype(np.int64)))
    if dataset.test is not None and len(dataset.test):
        X_test, y_test = pipeline.transform(dataset.test, source="test")
        test_source = "test"
    else:
        X_test = np.concatenate([b.X_val for b in banks])
        y_test = np.concatenate([b.y_val for b in banks])
        test_source = "banks_val"
        if len(y_test) == 0:
            raise FraudflError(
                f"{dataset.root}: no test file and no validation split (val_fraction 0): "
                "nothing to evaluate the global model on"
            )
    return PreparedData(
        task=pipeline.task, num_classes=pipeline.num_classes, pipeline=pipeline, banks=banks,
        X_test=X_test, y_test=y_test.astype(np.int64), test_source=test_source,
    )


def prepare_data(dataset: FederatedDataset, val_fraction: float, seed: int, *,
                 standardize: bool = True) -> PreparedData:
    """The banks' matrices under the pipeline fitted from the *sum* of their training
    statistics, as the statistics round fits it (benchmarks and baselines outside a run)."""
    splits = split_banks(dataset, val_fraction, seed)
    stats = [compute_stats(s.train, dataset.schema, source=s.bank_id) for s in splits]
    total = stats[0]
    for other in stats[1:]:
        total = total + other
    return transform_data(dataset, splits, FeaturePipeline.fit(total, standardize=standardize))


def straggler_work_fraction(rng: np.random.Generator, cfg: SimulationConfig) -> float:
    """A straggler's share of the planned work, following the FedProx paper where it applies."""
    if cfg.max_steps is None and cfg.local_epochs >= 2:
        return int(rng.integers(1, cfg.local_epochs)) / cfg.local_epochs
    return 1.0 - float(rng.uniform(0.0, 1.0))  # in (0, 1]


def plan_stragglers(
    server_round: int, selected: list[str], cfg: SimulationConfig
) -> dict[str, float]:
    """Which of the round's selected banks straggle, and the share of work each does; from
    the seed and round alone, so every strategy sees the same stragglers."""
    rng = np.random.default_rng([cfg.seed, 1, server_round])
    k = len(selected)
    # As the paper's code: round(k * (1 - fraction)) banks finish, the rest straggle.
    n_stragglers = k - round(k * (1.0 - cfg.straggler_fraction))
    chosen = sorted(rng.choice(sorted(selected), size=n_stragglers, replace=False).tolist())
    return {b: straggler_work_fraction(rng, cfg) for b in chosen}


def bank_rng(seed: int, index: int) -> Callable[[int], np.random.Generator]:
    """A simulated bank's generator for round ``rnd`` (batch sampling, DP noise): seeded, so a
    run is reproducible; a bank node draws from ``os.urandom`` instead."""
    return lambda rnd: np.random.default_rng([seed, 2, rnd, index])


def privacy_state_path(state_dir: Path, bank_id: str) -> Path:
    return state_dir / f"{bank_id}.privacy.json"


class Simulation:
    """One federation on the in-memory grid, observed round by round."""

    def __init__(
        self, dataset: FederatedDataset, config: SimulationConfig, *,
        on_round: Callable[[RoundRecord], None] | None = None,
    ) -> None:
        self.dataset = dataset
        self.config = config
        self.on_round = on_round
        self.splits = split_banks(dataset, config.val_fraction, config.seed)
        # Weights min(1, examples / weight_scale) are then examples / largest bank: the whole
        # quantisation range is used, and the ratio of weights is the ratio of examples.
        weight_scale = float(max(len(s.train) for s in self.splits))
        self.settings = config.federation_settings(len(self.splits), weight_scale)
        self.state_dir = None
        if config.privacy is not None and config.privacy.state_dir is not None:
            self.state_dir = Path(config.privacy.state_dir)
            try:
                self.state_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise FraudflError(f"{self.state_dir}: cannot create the privacy state "
                                   f"directory: {exc.strerror}") from exc
        aggregator = Identity.generate(AGGREGATOR_ID)
        identities = {s.bank_id: Identity.generate(s.bank_id) for s in self.splits}
        allowlist = Allowlist()
        for ident in (aggregator, *identities.values()):
            allowlist.enroll(ident.participant_id, ident.public_bytes)
        self.orchestrator = Orchestrator(self.settings, aggregator, allowlist, dataset.schema)
        self.index = {s.bank_id: i for i, s in enumerate(self.splits)}
        self.participants: dict[str, BankParticipant] = {}
        for s in self.splits:
            bank = config.bank_settings(s.bank_id)
            self.participants[s.bank_id] = BankParticipant(
                bank, identities[s.bank_id], allowlist, s.train, dataset.schema,
                self._accountant(bank, len(s.train)), policy=config.policy(),
                source=f"{s.bank_id} (train)",
                rng=self._bank_rng(s.bank_id), work_fraction=self._work_fraction(s.bank_id),
            )
        self.grid = InMemoryGrid(self.orchestrator, self.participants, absent=self._absent,
                                 on_model=self._on_model)
        self.data: PreparedData | None = None
        self.spec: ModelSpec | None = None
        self.params: npt.NDArray[np.float32] | None = None
        self.records: list[RoundRecord] = []
        # Set with model v0: the evaluation model and the pooled training rows for train_loss.
        self._eval_model: torch.nn.Module | None = None
        self._train_rows: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]] | None = None
        self._round_started = self._model_zero_at = time.perf_counter()
        self._stragglers: dict[int, dict[str, float]] = {}

    # -- per-bank hooks ----------------------------------------------------------------------

    def _accountant(self, bank: BankSettings, num_train: int) -> PrivacyAccountant:
        privacy = bank.privacy
        budget = PrivacyBudget(
            privacy.epsilon_budget,
            privacy.delta if privacy.delta is not None else default_delta(num_train),
        )
        if privacy.enabled:
            warn_if_vacuous(budget.delta, num_train, bank.bank_id)
        if self.state_dir is None or not privacy.enabled:
            return PrivacyAccountant(privacy.accountant, budget=budget, label=bank.bank_id)
        return PrivacyAccountant.load_or_create(
            privacy_state_path(self.state_dir, bank.bank_id), privacy.accountant,
            budget=budget, label=bank.bank_id,
        )

    def _bank_rng(self, bank_id: str) -> Callable[[int], np.random.Generator]:
        return bank_rng(self.config.seed, self.index[bank_id])

    def _round_stragglers(self, rnd: int) -> dict[str, float]:
        plan = self._stragglers.get(rnd)
        if plan is None:
            current = self.orchestrator.current
            selected = [] if current is None or current.round != rnd else current.selected
            plan = plan_stragglers(rnd, list(selected), self.config)
            self._stragglers[rnd] = plan
        return plan

    def _work_fraction(self, bank_id: str) -> Callable[[int], float]:
        return lambda rnd: self._round_stragglers(rnd).get(bank_id, 1.0)

    def _absent(self, bank_id: str, rnd: int) -> bool:
        """A straggler misses a round whose strategy refuses partial work (FedAvg drops it)."""
        if rnd == 0 or self.config.straggler_fraction == 0.0:
            return False
        strategy = self.orchestrator.strategy
        return not strategy.accept_partial_work and bank_id in self._round_stragglers(rnd)

    # -- observation -------------------------------------------------------------------------

    def _on_model(self, info: ModelInfo, params: npt.NDArray[np.float32]) -> None:
        self.params = params
        if info.version == 0:
            pipeline = FeaturePipeline.from_dict(info.pipeline)
            self.data = transform_data(self.dataset, self.splits, pipeline)
            self.spec = ModelSpec.from_dict(info.spec)
            self._eval_model = self.spec.build()
            self._train_rows = (np.concatenate([b.X_train for b in self.data.banks]),
                                np.concatenate([b.y_train for b in self.data.banks]))
            self._round_started = self._model_zero_at = time.perf_counter()
            return
        assert self.data is not None
        assert self._eval_model is not None and self._train_rows is not None
        set_flat_params(self._eval_model, params)
        metrics = evaluate(self._eval_model, self.data.X_test, self.data.y_test, self.data.task)
        metrics["train_loss"] = loss_only(self._eval_model, *self._train_rows, self.data.task)
        history = {r.round: r for r in self.orchestrator.history}
        rec = history.get(info.round)
        selected = [] if rec is None else list(rec.selected)
        stragglers = sorted(self._stragglers.get(info.round, {}))
        record = RoundRecord(
            round=len(self.records) + 1,
            global_metrics=metrics,
            banks=_evaluate_banks(self._eval_model, self.data),
            seconds=time.perf_counter() - self._round_started,
            participants=selected,
            stragglers=stragglers,
            dropped=list(info.dropouts),
            declined=list(info.declined),
        )
        record.privacy = self._privacy_report(info)
        self._save_accountants()
        self.records.append(record)
        self._round_started = time.perf_counter()
        if self.on_round is not None:
            self.on_round(record)

    def _privacy_report(self, info: ModelInfo) -> dict[str, Any]:
        opts = self.config.privacy
        if opts is None or not opts.enabled:
            return {}
        report: dict[str, Any] = {"declined": list(info.declined)}
        if opts.record_level:
            report["epsilon"] = self.epsilons()
        if opts.bank_level:
            report["federation_epsilon"] = info.federation_epsilon or 0.0
        return report

    def epsilons(self) -> dict[str, float]:
        """Record-level epsilon spent so far by every bank."""
        return {b: (p.accountant.epsilon() if p.accountant.history else 0.0)
                for b, p in sorted(self.participants.items())}

    def _save_accountants(self) -> None:
        if self.state_dir is None:
            return
        for bank_id, p in self.participants.items():
            if p.config.privacy.enabled:
                p.accountant.save(privacy_state_path(self.state_dir, bank_id))

    def startup_seconds(self, started: float) -> float:
        """From ``started`` to the initial model being ready at every bank: the statistics
        round, the pipeline and every bank's transform (what a round does not repeat)."""
        return self._model_zero_at - started

    def run(self) -> None:
        self.grid.run()
        completed = sum(1 for r in self.orchestrator.history
                        if r.kind == "train" and r.status == "completed")
        if self.orchestrator.history and self.orchestrator.history[0].status != "completed":
            reason = self.orchestrator.history[0].reason
            raise FraudflError(f"the statistics round failed: {reason}")
        if completed < self.config.rounds:
            last = self.orchestrator.history[-1]
            log.warning("the federation stopped after %d of %d rounds: %s", completed,
                        self.config.rounds, last.reason or "no banks left")


def _evaluate_banks(model: torch.nn.Module, data: PreparedData) -> dict[str, Metrics]:
    """Metrics on each bank's validation split (banks without one are left out)."""
    return {
        b.bank_id: evaluate(model, b.X_val, b.y_val, data.task)
        for b in data.banks
        if len(b.y_val)
    }


def run_simulation(
    dataset: FederatedDataset,
    config: SimulationConfig,
    *,
    on_round: Callable[[RoundRecord], None] | None = None,
) -> SimulationResult:
    """Run a federated simulation; see the module docstring for what happens around a round."""
    if config.model == "gbdt":
        from fraudfl.tree_simulation import run_tree_simulation

        return run_tree_simulation(dataset, config, on_round=on_round)
    started = time.perf_counter()
    threads_before = torch.get_num_threads()
    if config.torch_threads is not None:
        # Tiny models: thread hand-off costs more than it saves (measured in benchmarks/).
        torch.set_num_threads(config.torch_threads)
    try:
        sim = Simulation(dataset, config, on_round=on_round)
        sim.run()
        startup = sim.startup_seconds(started)
        if sim.data is None or sim.spec is None or sim.params is None:
            raise FraudflError("the federation published no model")
        if not sim.records:
            raise FraudflError("no training round completed: "
                               + (sim.orchestrator.history[-1].reason or "no banks left"))
        final: dict[str, Any] = dict(sim.records[-1].global_metrics)
        baselines = _run_baselines(sim.data, config, sim.spec, sim.orchestrator)
        if baselines:
            final["baselines"] = baselines
        personal: dict[str, npt.NDArray[np.float32]] = {}
        if config.personalization != "none":
            report, personal = _personalize(sim, dataset)
            final["personalization"] = report
        config_dict = {
            **config.to_dict(),
            "data": str(dataset.root),
            "task": sim.data.task,
            "num_banks": len(sim.data.banks),
            "num_features": sim.data.num_features,
            "eval_set": sim.data.test_source,
            "model_spec": sim.spec.to_dict(),
        }
        return SimulationResult(config_dict, sim.data.task, sim.records, final, startup,
                                sim.params, sim.spec, sim.data.pipeline, personal)
    finally:
        torch.set_num_threads(threads_before)


def _run_baselines(
    data: PreparedData, config: SimulationConfig, spec: ModelSpec, orchestrator: Orchestrator
) -> dict[str, Any]:
    """Local-only and pooled training with the same total local work as the federation."""
    out: dict[str, Any] = {}
    if config.baseline == "none":
        return out
    model = spec.build(seed=config.seed)
    initial = get_flat_params(model)
    total_epochs = config.rounds * config.local_epochs
    steps = None if config.max_steps is None else config.rounds * config.max_steps
    cfg = TrainConfig(
        task=data.task, local_epochs=total_epochs, max_steps=steps,
        batch_size=config.batch_size, lr=config.lr, mu=0.0,
        pos_weight=config.pos_weight, focal_gamma=config.focal_gamma,
    )
    if config.baseline in ("local", "all"):
        banks: dict[str, dict[str, Any]] = {}
        for i, bank in enumerate(data.banks):
            res = train_local(model, initial, bank.X_train, bank.y_train, cfg,
                              rng=np.random.default_rng([config.seed, 3, i]))
            set_flat_params(model, res.params)
            banks[bank.bank_id] = {
                "num_train": len(bank.y_train),
                "val": evaluate(model, bank.X_val, bank.y_val, data.task) if len(bank.y_val)
                else {},
                "global": evaluate(model, data.X_test, data.y_test, data.task),
            }
        smallest = min(data.banks, key=lambda b: len(b.y_train)).bank_id
        out["local"] = {"smallest_bank": smallest, "banks": banks}
    if config.baseline in ("centralized", "all"):
        X = np.concatenate([b.X_train for b in data.banks])
        y = np.concatenate([b.y_train for b in data.banks])
        res = train_local(model, initial, X, y, cfg, rng=np.random.default_rng([config.seed, 4]))
        set_flat_params(model, res.params)
        out["centralized"] = {
            "global": evaluate(model, data.X_test, data.y_test, data.task),
            "banks": _evaluate_banks(model, data),
        }
    return out


def _personalize(
    sim: Simulation, dataset: FederatedDataset
) -> tuple[dict[str, Any], dict[str, npt.NDArray[np.float32]]]:
    """Each bank's personal model (the bank node's own personalisation), compared with the
    global model on the bank's validation split.

    FedPer's global head is never trained, so FedPer banks are compared with the global model
    of the same federation run without personal layers (a second engine run)."""
    assert sim.data is not None and sim.params is not None and sim.spec is not None
    config = sim.config
    reference = sim.params
    if config.fedper_layers:
        plain_config = replace(config, personalization="none", personal_layers=0,
                               privacy=None if config.privacy is None
                               else replace(config.privacy, state_dir=None))
        ref = Simulation(dataset, plain_config)
        ref.grid.run()
        assert ref.params is not None
        reference = ref.params
    comparisons: list[BankComparison] = []
    declined: list[str] = []
    personal: dict[str, npt.NDArray[np.float32]] = {}
    model = sim.spec.build()
    for bank in sim.data.banks:
        participant = sim.participants[bank.bank_id]
        try:
            result = participant.personalize(bank.X_val, bank.y_val)
        except BudgetExhausted:  # the accountant logged why
            result = None
            declined.append(bank.bank_id)
        params = sim.params if result is None else result.params
        personal[bank.bank_id] = np.asarray(params, dtype=np.float32)
        comparisons.append(compare_on_bank(model, bank.bank_id, reference, params, bank.X_val,
                                           bank.y_val, sim.data.task))
    sim._save_accountants()
    report = PersonalizationReport(config.personalization, comparisons, declined).to_dict()
    if config.privacy is not None and config.privacy.record_level:
        report["epsilon"] = sim.epsilons()
    return report, personal


@dataclass(frozen=True)
class PersonalizationReport:
    """Per bank: global vs personalised metrics on the bank's validation split."""

    method: str
    banks: list[BankComparison]
    # Banks whose personal training would have exceeded their privacy budget: they keep the
    # global model (their "personal" metrics are the global ones).
    declined: list[str] = field(default_factory=list)

    def mean(self, which: str, metric: str = "auprc") -> float:
        values = [getattr(b, f"{which}_metrics").get(metric, math.nan) for b in self.banks]
        finite = [v for v in values if math.isfinite(v)]
        return float(np.mean(finite)) if finite else math.nan

    def mean_gain(self, metric: str = "auprc") -> float:
        """Mean over banks of the relative gain (personal / global - 1)."""
        gains = [b.gain(metric) for b in self.banks]
        finite = [g for g in gains if math.isfinite(g)]
        return float(np.mean(finite)) if finite else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "mean_global_auprc": self.mean("global"),
            "mean_personal_auprc": self.mean("personal"),
            "mean_relative_gain": self.mean_gain(),
            "banks": [b.to_dict() for b in self.banks],
            "declined": list(self.declined),
        }


def save_models(result: SimulationResult, directory: Path, dataset: FederatedDataset,
                config: SimulationConfig) -> list[Path]:
    """Write the final global model (and each bank's personal model under ``DIR/<bank>/``) as
    the scoring artifacts a bank node writes; thresholds are chosen on validation splits."""
    from fraudfl.scoring.artifact import TARGET_FPR, build_artifact, save_artifact

    if result.ensemble is not None:
        from fraudfl.tree_simulation import save_tree_model

        return [save_tree_model(result, directory, dataset, config)]
    if result.spec is None or result.pipeline is None:
        raise FraudflError("no model to save")
    if result.spec.num_classes != 2:
        raise FraudflError("--save-model: scoring artifacts are for binary fraud models")
    data = transform_data(dataset, split_banks(dataset, config.val_fraction, config.seed),
                          result.pipeline)
    X_val = np.concatenate([b.X_val for b in data.banks])
    y_val = np.concatenate([b.y_val for b in data.banks])
    if len(y_val) == 0:
        raise FraudflError("--save-model needs validation rows (--val-fraction > 0) to choose "
                           "the decision threshold")
    version = len(result.rounds)
    written = []
    model = result.spec.build()
    set_flat_params(model, result.final_params)
    artifact = build_artifact(model, result.spec, result.pipeline, X_val, y_val,
                              target_fpr=TARGET_FPR, version=version, round=version,
                              metrics=result.rounds[-1].global_metrics)
    written.append(save_artifact(artifact, directory))
    for bank in data.banks:
        params = result.personal_params.get(bank.bank_id)
        if params is None or not len(bank.y_val):
            continue
        set_flat_params(model, params)
        artifact = build_artifact(model, result.spec, result.pipeline, bank.X_val, bank.y_val,
                                  target_fpr=TARGET_FPR, version=version, round=version,
                                  bank_id=bank.bank_id,
                                  personalization=config.personalization)
        written.append(save_artifact(artifact, directory / bank.bank_id))
    return written


def smallest_bank_comparison(result: SimulationResult) -> dict[str, Any] | None:
    """Federated global AUPRC (or accuracy) vs the smallest bank's local-only model, both on
    the global evaluation set; None unless the local baseline ran."""
    local = result.final.get("baselines", {}).get("local")
    if local is None:
        return None
    metric = "auprc" if result.task == "binary" else "accuracy"
    bank = local["smallest_bank"]
    return {
        "metric": metric,
        "bank": bank,
        "federated": result.final[metric],
        "smallest_bank_local": local["banks"][bank]["global"][metric],
    }
