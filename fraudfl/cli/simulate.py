"""``fraudfl simulate``: a federated run over a dataset directory, in one process.

    fraudfl simulate --data data/banks --strategy fedprox --mu 0.01 --rounds 10 \\
        --baseline local --out results.json --plot convergence.png

Every round the global model is evaluated on the dataset's test file (or, without one, on the
union of the banks' validation splits) and on each bank's validation split. The results JSON
shape is documented in docs/simulation.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fraudfl.config import DEFAULT_MAX_GRAD_NORM, SecAggSettings, TrainingSettings, TreeSettings
from fraudfl.errors import FraudflError
from fraudfl.strategy import STRATEGY_NAMES

BASELINE_CHOICES = ("none", "local", "centralized", "all")
_TRAINING = TrainingSettings()
_DEFAULT_HIDDEN = ",".join(str(h) for h in _TRAINING.hidden)


def _columns(value: str) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()]


def _hidden(value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {value!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected positive layer sizes, got {value!r}")
    return sizes


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "simulate", help="run an in-process federated simulation over a dataset directory",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, type=Path, help="dataset directory (see docs/data.md)")
    p.add_argument("--label-column",
                   help="label column (overrides schema.toml; without one, the schema is "
                   "inferred, printed and written to DIR/schema.toml)")
    p.add_argument("--drop-columns", type=_columns, default=[], metavar="COL[,COL...]",
                   help="columns to ignore, comma-separated (ids, timestamps)")
    p.add_argument("--task", choices=["binary", "multiclass"],
                   help="override the task inferred from the labels")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help="a TOML file with the services' sections (rounds, training, strategy, "
                   "secagg, bank_dp, features, privacy, personal_training); flags override it")

    fed = p.add_argument_group("federation")
    fed.add_argument("--strategy", choices=STRATEGY_NAMES, default=None,
                     help="server strategy (default: fedprox)")
    fed.add_argument("--mu", type=float, default=None,
                     help="FedProx proximal coefficient (default: 0.01; FedProx only)")
    fed.add_argument("--rounds", type=int, default=None, help="federated rounds (default: 10)")
    fed.add_argument("--banks-per-round", type=int, default=None,
                     help="banks sampled per round, capped at the number of banks (default: 10)")
    fed.add_argument("--straggler-fraction", type=float, default=0.0,
                     help="fraction of each round's banks that straggle (default: 0)")
    fed.add_argument("--server-lr", type=float, default=None,
                     help="FedAvgM server learning rate (default: 1.0)")
    fed.add_argument("--server-momentum", type=float, default=None,
                     help="FedAvgM momentum (default: 0.9)")
    fed.add_argument("--eta", type=float, default=None,
                     help="FedAdam/FedYogi server step (default: 0.01)")
    fed.add_argument("--beta1", type=float, default=None,
                     help="FedAdam/FedYogi beta1 (default: 0.9)")
    fed.add_argument("--beta2", type=float, default=None,
                     help="FedAdam/FedYogi beta2 (default: 0.99)")
    fed.add_argument("--tau", type=float, default=None,
                     help="FedAdam/FedYogi adaptivity (default: 0.001)")
    fed.add_argument("--update-weight", choices=["constant", "examples"], default="constant",
                     help="each bank's weight in the average: constant (the consortium "
                     "policy's default: no example count leaves a bank) or its example count "
                     "(FedAvg by size; default: constant)")
    fed.add_argument("--secure-aggregation", action="store_true", default=None,
                     help="run the real SecAgg protocol; without it the same quantised sum is "
                     "computed in the clear (faster, bit-identical)")
    fed.add_argument("--secagg-neighbours", type=int, default=None, metavar="K",
                     help="with --secure-aggregation: SecAgg+ degree k (default 0: full graph)")

    loc = p.add_argument_group("local training")
    loc.add_argument("--model", choices=["logistic", "mlp", "gbdt"], default=None,
                     help="model (default: mlp; gbdt: gradient-boosted trees, docs/trees.md)")
    loc.add_argument("--hidden", type=_hidden, default=None, metavar="N[,N...]",
                     help=f"MLP hidden layer sizes (default: {_DEFAULT_HIDDEN})")
    loc.add_argument("--local-epochs", type=int, default=None,
                     help="local epochs per round (default: 1)")
    loc.add_argument("--max-steps", type=int,
                     help="local mini-batch steps per round instead of epochs")
    loc.add_argument("--batch-size", type=int, default=None,
                     help=f"batch size (default: {_TRAINING.batch_size})")
    loc.add_argument("--lr", type=float, default=None,
                     help=f"local SGD learning rate (default: {_TRAINING.lr})")
    loc.add_argument("--pos-weight", type=float,
                     help="weight of positive (fraud) examples in the loss")
    loc.add_argument("--focal-gamma", type=float, help="focal-loss gamma (class imbalance)")
    loc.add_argument("--no-standardize", action="store_true", default=None,
                     help="train on raw numeric features (no mean/std scaling)")
    loc.add_argument("--val-fraction", type=float, default=0.2,
                     help="share of each bank held out for validation (default: 0.2)")

    trees = p.add_argument_group("gradient-boosted trees (--model gbdt; docs/trees.md)")
    _tree_defaults = TreeSettings()
    trees.add_argument("--trees", type=int, default=None,
                       help=f"boosting rounds (default: {_tree_defaults.n_estimators})")
    trees.add_argument("--max-depth", type=int, default=None,
                       help=f"levels per tree (default: {_tree_defaults.max_depth})")
    trees.add_argument("--learning-rate", type=float, default=None,
                       help=f"shrinkage (default: {_tree_defaults.learning_rate})")
    trees.add_argument("--l2", type=float, default=None,
                       help=f"L2 on leaf values, lambda (default: {_tree_defaults.reg_lambda})")
    trees.add_argument("--min-child-weight", type=float, default=None,
                       help=f"least hessian sum per child (default: "
                       f"{_tree_defaults.min_child_weight})")
    trees.add_argument("--subsample", type=float, default=None,
                       help="share of each bank's rows per tree, Poisson-sampled (default: 1)")
    trees.add_argument("--colsample", type=float, default=None,
                       help="share of features per tree (default: 1)")

    pers = p.add_argument_group("personalization (docs/personalization.md)")
    pers.add_argument("--personalization", choices=["none", "finetune", "fedper", "ditto"],
                      default="none",
                      help="personalise per bank and report global vs personal AUPRC per bank")
    pers.add_argument("--personal-epochs", type=int, default=None,
                      help="fine-tuning/Ditto epochs on the bank's data (default: 3)")
    pers.add_argument("--ditto-lambda", type=float, default=None,
                      help="Ditto's pull towards the global model (default: 0.1)")

    dp = p.add_argument_group("differential privacy (docs/privacy.md)")
    dp.add_argument("--target-epsilon", type=float,
                    help="record-level DP-SGD: each bank's lifetime epsilon budget; without "
                    "--noise-multiplier the noise is calibrated to spend it over --rounds")
    dp.add_argument("--delta", type=float,
                    help="record-level delta (default: 0.1 / records of each bank)")
    dp.add_argument("--noise-multiplier", type=float,
                    help="record-level DP-SGD with this noise multiplier")
    dp.add_argument("--max-grad-norm", type=float, default=None,
                    help=f"per-sample gradient clipping norm (default: {DEFAULT_MAX_GRAD_NORM})")
    dp.add_argument("--accountant", choices=["rdp", "prv"], default=None,
                    help="privacy accountant (default: rdp; prv is tighter)")
    dp.add_argument("--dp-engine", choices=["vectorized", "ghost", "hooks", "functorch"],
                    default=None,
                    help="per-sample clipping: vectorized (default, fastest) or an Opacus mode")
    dp.add_argument("--privacy-state-dir", type=Path,
                    help="save/restore each bank's accountant here (a rerun resumes the spent "
                    "budget)")
    dp.add_argument("--bank-dp-clip", type=float,
                    help="bank-level DP: clip each bank's whole update to this L2 norm")
    dp.add_argument("--bank-dp-noise", type=float,
                    help="bank-level DP: noise multiplier of the summed update")
    dp.add_argument("--bank-dp-delta", type=float,
                    help="bank-level delta (default: 0.1 / number of banks)")

    out = p.add_argument_group("output")
    out.add_argument("--seed", type=int, default=None,
                     help="seed of the whole run (default: 0)")
    out.add_argument("--baseline", choices=BASELINE_CHOICES, default="none",
                     help="also train local-only and/or centralised baselines (default: none)")
    out.add_argument("--out", type=Path, help="write the results JSON here")
    out.add_argument("--plot", type=Path, help="write PNG convergence plots here")
    out.add_argument("--save-model", type=Path, metavar="DIR",
                     help="write the final global model (and each bank's personal model under "
                     "DIR/<bank>/) as scoring artifacts for `fraudfl score` / `fraudfl serve`")
    out.add_argument("--threads", type=int, default=1,
                     help="torch CPU threads (default: 1, fastest for small models)")
    out.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


class SimulationProgress:
    """A rich progress bar over the rounds, fed by the simulation's per-round callback."""

    def __init__(self, rounds: int, strategy: str, *, enabled: bool, console: Any) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[status]}"),
            console=console, transient=True, disable=not enabled,
        )
        self.task = self.bar.add_task(strategy, total=rounds, status="")

    def __enter__(self) -> SimulationProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)

    def advance(self, record: Any) -> None:
        metrics = record.global_metrics
        headline = "auprc" if "auprc" in metrics else "accuracy"
        self.bar.update(self.task, advance=1, status=f"{headline} {metrics[headline]:.4f}")


def _record_level(args: argparse.Namespace) -> bool:
    return args.target_epsilon is not None or args.noise_multiplier is not None


# Flags that only take effect together with another setting: (default, what they need, whether
# it is there). The parser leaves them None so that one given without what it needs is refused
# instead of silently ignored.
_DEPENDENT_FLAGS: dict[str, tuple[object, str, Callable[[argparse.Namespace], bool]]] = {
    "mu": (0.01, "--strategy fedprox", lambda a: a.strategy == "fedprox"),
    "server_lr": (1.0, "--strategy fedavgm", lambda a: a.strategy == "fedavgm"),
    "server_momentum": (0.9, "--strategy fedavgm", lambda a: a.strategy == "fedavgm"),
    **{
        name: (default, "--strategy fedadam or fedyogi",
               lambda a: a.strategy in ("fedadam", "fedyogi"))
        for name, default in (("eta", 1e-2), ("beta1", 0.9), ("beta2", 0.99), ("tau", 1e-3))
    },
    "personal_epochs": (3, "--personalization finetune or ditto",
                        lambda a: a.personalization in ("finetune", "ditto")),
    "ditto_lambda": (0.1, "--personalization ditto", lambda a: a.personalization == "ditto"),
    "max_grad_norm": (DEFAULT_MAX_GRAD_NORM, "--target-epsilon or --noise-multiplier",
                      _record_level),
    "accountant": ("rdp", "--target-epsilon or --noise-multiplier", _record_level),
    "dp_engine": ("vectorized", "--target-epsilon or --noise-multiplier", _record_level),
}


# Tree flags (argparse dest) and their key in the [trees] settings; only with --model gbdt.
TREE_FLAGS: dict[str, str] = {
    "trees": "n_estimators",
    "max_depth": "max_depth",
    "learning_rate": "learning_rate",
    "l2": "reg_lambda",
    "min_child_weight": "min_child_weight",
    "subsample": "subsample",
    "colsample": "colsample_bytree",
}


def tree_settings(args: argparse.Namespace) -> TreeSettings:
    """The [trees] section of --config with the tree flags over it."""
    from pydantic import ValidationError

    values = dict(getattr(args, "tree_file", {}))
    for dest, key in TREE_FLAGS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if args.model != "gbdt":
            raise FraudflError(f"--{dest.replace('_', '-')} needs --model gbdt; alone it has "
                               "no effect")
        values[key] = value
    try:
        return TreeSettings.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else "trees"
        flag = next((d for d, k in TREE_FLAGS.items() if k == key), key)
        raise FraudflError(f"--{flag.replace('_', '-')}: {err['msg']} "
                           f"(got {err.get('input')!r})") from None


def _apply_dependent_flags(args: argparse.Namespace) -> None:
    for name, (default, needs, applies) in _DEPENDENT_FLAGS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
        elif not applies(args):
            raise FraudflError(f"--{name.replace('_', '-')} needs {needs}; alone it has no effect")


def run(args: argparse.Namespace) -> int:
    # Imported here so that `fraudfl --help` does not pay for torch.
    from rich.console import Console

    from fraudfl.cli.console import output_console
    from fraudfl.cli.reporting import (
        check_plot_path,
        check_results_path,
        plot_convergence,
        rounds_table,
        summary_lines,
        write_results,
    )
    from fraudfl.cli.schema_inference import infer_and_write, needs_inference
    from fraudfl.cli.simulate_config import apply_config_file
    from fraudfl.data import load_dataset
    from fraudfl.privacy.options import PrivacyOptions
    from fraudfl.simulation import SimulationConfig, run_simulation, save_models

    apply_config_file(args)
    _apply_dependent_flags(args)
    if not args.data.is_dir():
        raise FraudflError(f"{args.data}: not a directory (expected a dataset directory)")
    if args.out is not None:
        check_results_path(args.out)
    if args.plot is not None:
        check_plot_path(args.plot)
    if args.save_model is not None and args.save_model.exists() and not args.save_model.is_dir():
        raise FraudflError(f"--save-model {args.save_model}: exists and is not a directory")
    privacy = PrivacyOptions(
        target_epsilon=args.target_epsilon, delta=args.delta,
        noise_multiplier=args.noise_multiplier, max_grad_norm=args.max_grad_norm,
        accountant=args.accountant, engine=args.dp_engine,
        state_dir=None if args.privacy_state_dir is None else str(args.privacy_state_dir),
        bank_dp_clip=args.bank_dp_clip, bank_dp_noise=args.bank_dp_noise,
        bank_dp_delta=args.bank_dp_delta,
    )
    if args.secagg_neighbours is not None and not args.secure_aggregation:
        raise FraudflError("--secagg-neighbours needs --secure-aggregation")
    config = SimulationConfig(
        strategy=args.strategy, mu=args.mu, rounds=args.rounds,
        banks_per_round=args.banks_per_round, local_epochs=args.local_epochs,
        max_steps=args.max_steps, batch_size=args.batch_size, lr=args.lr,
        straggler_fraction=args.straggler_fraction, seed=args.seed, model=args.model,
        hidden=args.hidden, val_fraction=args.val_fraction,
        standardize=not args.no_standardize, baseline=args.baseline,
        pos_weight=args.pos_weight, focal_gamma=args.focal_gamma, server_lr=args.server_lr,
        server_momentum=args.server_momentum, eta=args.eta, beta1=args.beta1,
        beta2=args.beta2, tau=args.tau, torch_threads=args.threads,
        privacy=privacy if privacy.enabled else None,
        secure_aggregation=bool(args.secure_aggregation),
        secagg_neighbours=args.secagg_neighbours or 0,
        secagg_clip_range=getattr(args, "secagg_clip_range", SecAggSettings().clip_range),
        update_weight=args.update_weight,
        personalization=args.personalization, personal_epochs=args.personal_epochs,
        ditto_lambda=args.ditto_lambda, trees=tree_settings(args),
    )
    console = output_console()
    if needs_inference(args.data, args.label_column):
        infer_and_write(args.data, args.label_column, args.drop_columns, args.task, console)
    dataset = load_dataset(
        args.data, label_column=args.label_column, drop_columns=args.drop_columns,
        task=args.task,
    )
    gbdt = config.model == "gbdt"
    with SimulationProgress(config.trees.n_estimators if gbdt else config.rounds,
                            "gbdt trees" if gbdt else f"{config.strategy} rounds",
                            enabled=not args.no_progress,
                            console=Console(stderr=True)) as progress:
        result = run_simulation(dataset, config, on_round=progress.advance)
    personalization = result.final.get("personalization")
    if personalization is not None:
        from fraudfl.cli.reporting import personalization_table

        console.print(personalization_table(personalization))
        epsilons = personalization.get("epsilon")
        if epsilons:
            console.print("record-level epsilon after personal training: " + ", ".join(
                f"{bank} {eps:.4f}" for bank, eps in epsilons.items()))
    console.print(rounds_table(result))
    for line in summary_lines(result):
        console.print(line)
    if args.out is not None:
        write_results(result, args.out)
        console.print(f"results written to {args.out}")
    if args.plot is not None:
        plot_convergence(result, args.plot)
        console.print(f"plots written to {args.plot}")
    if args.save_model is not None:
        for path in save_models(result, args.save_model, dataset, config):
            console.print(f"scoring artifact written to {path.parent}")
    return 0
