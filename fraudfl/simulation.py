"""In-process federation: the same trainer, strategy and aggregation seam as the services.

One run:

1. Each bank's frame is split into train/validation (stratified, seeded per bank).
2. The feature pipeline is fitted from the *sum* of the banks' training statistics, as the
   federation would do through secure aggregation.
3. Each round the server samples ``banks_per_round`` banks (the sample, the stragglers and
   their work fractions come from a per-round RNG, so every strategy sees the same banks and
   stragglers in the same round). Stragglers get a random ``work_fraction`` < 1: with
   ``local_epochs = E >= 2`` a uniform whole number of epochs in ``[1, E)`` as in the FedProx
   paper, otherwise a uniform fraction of the planned steps. A strategy that does not accept
   partial work (FedAvg) drops them; FedProx keeps what they did.
4. Updates ``w_local - w_global`` weighted by ``num_examples`` are summed by an
   :class:`~fraudfl.strategy.Aggregator` (plain sum by default; secure aggregation plugs in
   here) and the strategy computes the next global model from the sum alone.
5. The global model is evaluated on the global test set (or, without one, the union of the
   banks' validation sets), on every bank's validation set, and its loss on all banks'
   training data (``train_loss``, the objective the FedProx paper plots).

Optional baselines: ``local`` (each bank alone, the same total local work) and
``centralized`` (all training data pooled, ``rounds * local_epochs`` epochs).

The results' JSON shape is documented in ``docs/simulation.md``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from fraudfl.data import (
    FeaturePipeline,
    FederatedDataset,
    compute_stats,
    train_val_split,
)
from fraudfl.errors import FraudflError
from fraudfl.models import MODEL_KINDS, ModelSpec, Task, get_flat_params, set_flat_params
from fraudfl.privacy.accountant import BudgetExhausted
from fraudfl.privacy.options import PrivacyOptions
from fraudfl.strategy import (
    STRATEGY_NAMES,
    Aggregator,
    Contribution,
    PlainAggregator,
    Strategy,
    make_strategy,
)
from fraudfl.training.evaluation import evaluate, loss_only
from fraudfl.training.local import LocalTrainer, TrainConfig, plain_trainer, train_local

if TYPE_CHECKING:  # imports Opacus (seconds): only runs with DP pay for it
    from fraudfl.privacy.federation import FederationPrivacy

log = logging.getLogger(__name__)

Baseline = Literal["none", "local", "centralized", "all"]
BASELINES: tuple[Baseline, ...] = ("none", "local", "centralized", "all")
Metrics = dict[str, float]


@dataclass
class SimulationConfig:
    """Every knob of a simulation run (the CLI flags map one-to-one onto these fields)."""

    strategy: str = "fedprox"
    mu: float = 0.01
    rounds: int = 10
    banks_per_round: int = 10
    local_epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 64
    lr: float = 0.05
    straggler_fraction: float = 0.0
    seed: int = 0
    model: str = "mlp"
    hidden: tuple[int, ...] = (64, 32)
    val_fraction: float = 0.2
    standardize: bool = True
    baseline: str = "none"
    pos_weight: float | None = None
    focal_gamma: float | None = None
    server_lr: float = 1.0
    server_momentum: float = 0.9
    eta: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    torch_threads: int | None = 1
    # Record-level DP-SGD and/or bank-level update DP (docs/privacy.md); None: no DP.
    privacy: PrivacyOptions | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGY_NAMES:
            raise FraudflError(f"strategy must be one of {STRATEGY_NAMES}, got {self.strategy!r}")
        if self.model not in MODEL_KINDS:
            raise FraudflError(f"model must be one of {MODEL_KINDS}, got {self.model!r}")
        if self.baseline not in BASELINES:
            raise FraudflError(f"baseline must be one of {BASELINES}, got {self.baseline!r}")
        if self.rounds < 1:
            raise FraudflError(f"rounds must be >= 1, got {self.rounds}")
        if self.banks_per_round < 1:
            raise FraudflError(f"banks_per_round must be >= 1, got {self.banks_per_round}")
        if not 0.0 <= self.straggler_fraction <= 1.0:
            raise FraudflError(
                f"straggler_fraction must be in [0, 1], got {self.straggler_fraction}"
            )
        if not 0.0 <= self.val_fraction < 1.0:
            raise FraudflError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise FraudflError(f"torch_threads must be >= 1, got {self.torch_threads}")
        # Validates local_epochs, max_steps, batch_size, lr, mu the same way the trainer does.
        self.train_config("binary", mu=self.mu)

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

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hidden"] = list(self.hidden)
        return data


@dataclass
class BankData:
    bank_id: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray


@dataclass
class PreparedData:
    """Feature matrices for every bank and for the evaluation set."""

    task: Task
    num_classes: int
    pipeline: FeaturePipeline
    banks: list[BankData]
    X_test: np.ndarray
    y_test: np.ndarray
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
    # Banks that declined the round because it would exceed their privacy budget.
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
    final_params: np.ndarray = field(repr=False)

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


def prepare_data(
    dataset: FederatedDataset, val_fraction: float, seed: int, *, standardize: bool = True
) -> PreparedData:
    """Split banks, fit the pipeline from summed per-bank statistics, build feature matrices.

    ``standardize=False`` keeps numeric features as they are (e.g. to reproduce a paper that
    trains on raw features); categorical columns are one-hot encoded either way.
    """
    schema = dataset.schema
    if not dataset.banks:
        raise FraudflError(f"{dataset.root}: the dataset has no bank files")
    splits = {}
    for i, (bank_id, frame) in enumerate(dataset.banks.items()):
        train, val = train_val_split(frame, schema, val_fraction, seed=seed * 1_000_003 + i)
        if len(train) == 0:
            raise FraudflError(
                f"{dataset.root}: bank '{bank_id}' has {len(frame)} row(s), too few to split "
                f"off a validation set of {val_fraction:.0%}"
            )
        splits[bank_id] = (train, val)
    per_bank = [compute_stats(train, schema, source=b) for b, (train, _) in splits.items()]
    stats = per_bank[0]
    for other in per_bank[1:]:
        stats = stats + other
    pipeline = FeaturePipeline.fit(stats)
    if not standardize:
        pipeline = replace(
            pipeline, means=np.zeros_like(pipeline.means), stds=np.ones_like(pipeline.stds)
        )
    banks = []
    for bank_id, (train, val) in splits.items():
        X_train, y_train = pipeline.transform(train, source=f"{bank_id} (train)")
        X_val, y_val = pipeline.transform(val, source=f"{bank_id} (validation)")
        banks.append(BankData(bank_id, X_train, y_train, X_val, y_val))
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
        task=schema.task,
        num_classes=schema.num_classes,
        pipeline=pipeline,
        banks=banks,
        X_test=X_test,
        y_test=y_test,
        test_source=test_source,
    )


def straggler_work_fraction(rng: np.random.Generator, cfg: SimulationConfig) -> float:
    """A straggler's share of the planned work, following the FedProx paper where it applies."""
    if cfg.max_steps is None and cfg.local_epochs >= 2:
        return int(rng.integers(1, cfg.local_epochs)) / cfg.local_epochs
    return 1.0 - float(rng.uniform(0.0, 1.0))  # in (0, 1]


@dataclass
class _RoundPlan:
    participants: list[int]
    work_fractions: dict[int, float]  # stragglers only


def plan_round(
    server_round: int, num_banks: int, cfg: SimulationConfig
) -> _RoundPlan:
    """Which banks take part and which of them straggle, from the seed and round alone."""
    rng = np.random.default_rng([cfg.seed, 1, server_round])
    k = min(cfg.banks_per_round, num_banks)
    chosen = sorted(int(i) for i in rng.choice(num_banks, size=k, replace=False))
    # As the paper's code: round(k * (1 - fraction)) banks finish, the rest straggle.
    n_stragglers = k - round(k * (1.0 - cfg.straggler_fraction))
    stragglers = sorted(int(i) for i in rng.choice(chosen, size=n_stragglers, replace=False))
    return _RoundPlan(chosen, {i: straggler_work_fraction(rng, cfg) for i in stragglers})


def _evaluate_banks(model: nn.Module, data: PreparedData) -> dict[str, Metrics]:
    """Metrics on each bank's validation split (banks without one, val_fraction 0, are left
    out)."""
    return {
        b.bank_id: evaluate(model, b.X_val, b.y_val, data.task)
        for b in data.banks
        if len(b.y_val)
    }


def _global_metrics(model: nn.Module, data: PreparedData, X_train_all: np.ndarray,
                    y_train_all: np.ndarray) -> Metrics:
    metrics = evaluate(model, data.X_test, data.y_test, data.task)
    metrics["train_loss"] = loss_only(model, X_train_all, y_train_all, data.task)
    return metrics


def run_simulation(
    dataset: FederatedDataset,
    config: SimulationConfig,
    *,
    progress: bool = True,
    strategy: Strategy | None = None,
    aggregator: Aggregator | None = None,
    trainer: LocalTrainer | None = None,
    privacy: FederationPrivacy | None = None,
    on_round: Callable[[RoundRecord], None] | None = None,
    console: Console | None = None,
) -> SimulationResult:
    """Run a federated simulation; see the module docstring for what happens in a round.

    ``strategy``, ``aggregator`` and ``trainer`` default to the configured strategy, the plain
    sum and non-private training; wrappers (secure aggregation, DP) are passed in here.
    With DP in ``config.privacy`` the run builds its :class:`FederationPrivacy` unless one is
    passed as ``privacy``; its private trainer is the default trainer. A caller's own
    ``trainer`` under record-level DP must train through ``privacy.trainer`` (e.g. a FedPer
    wrapper around it) and come with that ``privacy``: it is never silently replaced.
    """
    started = time.perf_counter()
    threads_before = torch.get_num_threads()
    if config.torch_threads is not None:
        # Tiny models: thread hand-off costs more than it saves (measured in benchmarks/).
        torch.set_num_threads(config.torch_threads)
    try:
        return _run(dataset, config, started, progress, strategy, aggregator, trainer,
                    privacy, on_round, console)
    finally:
        torch.set_num_threads(threads_before)


def _run(
    dataset: FederatedDataset,
    config: SimulationConfig,
    started: float,
    progress: bool,
    strategy: Strategy | None,
    aggregator: Aggregator | None,
    trainer: LocalTrainer | None,
    privacy: FederationPrivacy | None,
    on_round: Callable[[RoundRecord], None] | None,
    console: Console | None,
) -> SimulationResult:
    data = prepare_data(dataset, config.val_fraction, config.seed,
                        standardize=config.standardize)
    spec = ModelSpec(config.model, data.num_features, data.num_classes,  # type: ignore[arg-type]
                     config.hidden)
    strategy = strategy or make_strategy(
        config.strategy,
        mu=config.mu,
        server_lr=config.server_lr,
        server_momentum=config.server_momentum,
        eta=config.eta,
        beta1=config.beta1,
        beta2=config.beta2,
        tau=config.tau,
        fit_config={"local_epochs": config.local_epochs},
    )
    aggregator = aggregator or PlainAggregator()
    if privacy is None and config.privacy is not None and config.privacy.enabled:
        if config.privacy.record_level and trainer is not None:
            raise ValueError("record-level DP with a caller's trainer: pass the "
                             "FederationPrivacy whose trainer it wraps as `privacy`")
        from fraudfl.privacy.federation import FederationPrivacy  # imports Opacus (seconds)

        privacy = FederationPrivacy(config.privacy, rounds=config.rounds,
                                    num_banks=len(data.banks),
                                    banks_per_round=config.banks_per_round, seed=config.seed)
    if privacy is not None:
        aggregator = privacy.wrap(aggregator)
        trainer = trainer or privacy.trainer
    trainer = trainer or plain_trainer
    model = spec.build(seed=config.seed)
    eval_model = spec.build(seed=config.seed)
    initial = get_flat_params(model)
    global_params = initial.copy()
    X_train_all = np.concatenate([b.X_train for b in data.banks])
    y_train_all = np.concatenate([b.y_train for b in data.banks])
    startup = time.perf_counter() - started
    log.info(
        "simulation: %d banks, %d features, task %s, evaluation on %s (%d rows); start-up %.2fs",
        len(data.banks), data.num_features, data.task, data.test_source, len(data.y_test), startup,
    )

    records: list[RoundRecord] = []
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("{task.fields[status]}"),
        console=console or Console(stderr=True), transient=True, disable=not progress,
    )
    with bar:
        task_id = bar.add_task(f"{strategy.name} rounds", total=config.rounds, status="")
        for server_round in range(1, config.rounds + 1):
            t0 = time.perf_counter()
            record = _one_round(server_round, global_params, data, config, strategy,
                                aggregator, trainer, model)
            global_params = record.pop("params")
            set_flat_params(eval_model, global_params)
            global_metrics = _global_metrics(eval_model, data, X_train_all, y_train_all)
            rec = RoundRecord(
                round=server_round,
                global_metrics=global_metrics,
                banks=_evaluate_banks(eval_model, data),
                seconds=time.perf_counter() - t0,
                **record,
            )
            if privacy is not None:
                rec.privacy = privacy.round_report(rec.declined)
            records.append(rec)
            if on_round is not None:
                on_round(rec)
            headline = "auprc" if data.task == "binary" else "accuracy"
            bar.update(task_id, advance=1,
                       status=f"{headline} {global_metrics[headline]:.4f}")

    final: dict[str, Any] = dict(records[-1].global_metrics)
    baselines = _run_baselines(data, config, spec, initial)
    if baselines:
        final["baselines"] = baselines
    config_dict = {
        **config.to_dict(),
        "data": str(dataset.root),
        "task": data.task,
        "num_banks": len(data.banks),
        "num_features": data.num_features,
        "eval_set": data.test_source,
        "model_spec": spec.to_dict(),
    }
    return SimulationResult(config_dict, data.task, records, final, startup, global_params)


def _one_round(
    server_round: int,
    global_params: np.ndarray,
    data: PreparedData,
    config: SimulationConfig,
    strategy: Strategy,
    aggregator: Aggregator,
    trainer: LocalTrainer,
    model: nn.Module,
) -> dict[str, Any]:
    instructions = strategy.configure_round(server_round, global_params)
    mu = float(instructions.config.get("mu", 0.0))
    local_epochs = int(instructions.config.get("local_epochs", config.local_epochs))
    train_cfg = config.train_config(data.task, mu=mu, local_epochs=local_epochs)
    plan = plan_round(server_round, len(data.banks), config)
    contributions: list[Contribution] = []
    participants, stragglers, dropped, declined = [], [], [], []
    for index in plan.participants:
        bank = data.banks[index]
        participants.append(bank.bank_id)
        work_fraction = plan.work_fractions.get(index, 1.0)
        if index in plan.work_fractions:
            stragglers.append(bank.bank_id)
            if not instructions.accept_partial_work:
                dropped.append(bank.bank_id)
                continue
        try:
            result = trainer(
                bank.bank_id, model, global_params, bank.X_train, bank.y_train, train_cfg,
                rng=np.random.default_rng([config.seed, 2, server_round, index]),
                work_fraction=work_fraction,
            )
        except BudgetExhausted:
            declined.append(bank.bank_id)  # the bank logged why; the round goes on without it
            continue
        contributions.append(
            Contribution(
                bank_id=bank.bank_id,
                weight=float(result.num_examples),
                update=result.params - global_params,
                partial=not result.completed,
            )
        )
    summed = aggregator.sum(server_round, contributions, dim=global_params.shape[0])
    new_params = strategy.aggregate(server_round, global_params, summed)
    return {
        "params": new_params,
        "participants": participants,
        "stragglers": stragglers,
        "dropped": dropped,
        "declined": declined,
    }


def _run_baselines(
    data: PreparedData, config: SimulationConfig, spec: ModelSpec, initial: np.ndarray
) -> dict[str, Any]:
    """Local-only and pooled training with the same total local work as the federation."""
    out: dict[str, Any] = {}
    if config.baseline == "none":
        return out
    model = spec.build(seed=config.seed)
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

