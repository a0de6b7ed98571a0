"""Human-facing output of simulations: the per-round table, the summary, convergence plots."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from fraudfl.errors import FraudflError
from fraudfl.simulation import SimulationResult, smallest_bank_comparison
from fraudfl.training.evaluation import metric_names

_HEADERS = {
    "roc_auc": "ROC-AUC",
    "recall_at_1pct_fpr": "R@1%FPR",
    "train_loss": "train loss",
    "auprc": "AUPRC",
}


def _fmt(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def rounds_table(result: SimulationResult) -> Table:
    """One row per round: global metrics, participation and wall-clock seconds."""
    names = [*metric_names(result.task), "train_loss"]
    table = Table(title=f"{result.config['strategy']} on {result.config['data']}")
    table.add_column("round", justify="right")
    for name in names:
        table.add_column(_HEADERS.get(name, name), justify="right")
    table.caption = "banks: updates aggregated; late: stragglers" + (
        " (partial work kept)" if result.config["strategy"] == "fedprox" else " (dropped)"
    )
    table.add_column("banks", justify="right")
    table.add_column("late", justify="right")
    # DP runs: the largest record-level epsilon of any bank so far, the federation-level
    # (bank-level DP) epsilon, and banks that declined for lack of budget.
    record_dp = any("epsilon" in r.privacy for r in result.rounds)
    bank_dp = any("federation_epsilon" in r.privacy for r in result.rounds)
    if record_dp:
        table.add_column("max ε", justify="right")
        table.add_column("declined", justify="right")
    if bank_dp:
        table.add_column("fed ε", justify="right")
    table.add_column("s", justify="right")
    for r in result.rounds:
        dp_cells = []
        if record_dp:
            eps = r.privacy.get("epsilon", {})
            dp_cells += [_fmt(max(eps.values())) if eps else "-", str(len(r.declined))]
        if bank_dp:
            dp_cells.append(_fmt(r.privacy["federation_epsilon"]))
        table.add_row(
            str(r.round),
            *(_fmt(r.global_metrics[n]) for n in names),
            str(len(r.participants) - len(r.dropped) - len(r.declined)),
            str(len(r.stragglers)),
            *dp_cells,
            f"{r.seconds:.2f}",
        )
    return table


def summary_lines(result: SimulationResult) -> list[str]:
    """The final figures, and the benefit of federation when baselines ran."""
    names = metric_names(result.task)
    lines = [
        "final global model on "
        + ("the test set" if result.config["eval_set"] == "test" else "the banks' validation sets")
        + ": "
        + ", ".join(f"{n} {_fmt(result.final[n])}" for n in names)
    ]
    cmp = smallest_bank_comparison(result)
    if cmp is not None:
        fed, local = cmp["federated"], cmp["smallest_bank_local"]
        verdict = "above" if fed > local else "NOT above"
        lines.append(
            f"federated global {cmp['metric']} {_fmt(fed)} vs smallest bank "
            f"({cmp['bank']}) local-only {_fmt(local)} on the same evaluation set: "
            f"federation is {verdict} local-only training"
        )
    central = result.final.get("baselines", {}).get("centralized")
    if central is not None:
        lines.append(
            "centralised (pooled, non-private) baseline: "
            + ", ".join(f"{n} {_fmt(central['global'][n])}" for n in names)
        )
    return lines


def check_results_path(path: Path) -> None:
    """Refuse a results path that cannot be written, before a run spends its time."""
    if path.is_dir():
        raise FraudflError(f"{path}: is a directory; expected a file name for the results JSON")


def check_plot_path(path: Path) -> None:
    """Plots are PNG; any other name would be refused by matplotlib after the run, and one
    without a suffix silently became ``<name>.png``."""
    if path.suffix.lower() != ".png":
        raise FraudflError(f"{path}: plots are written as PNG; expected a file name ending in .png")
    if path.is_dir():
        raise FraudflError(f"{path}: is a directory; expected a file name for the plot")


def write_results(result: SimulationResult, path: Path) -> None:
    """The documented results JSON (NaN written as null)."""
    check_results_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n")
    except OSError as exc:
        raise FraudflError(f"{path}: cannot write results: {exc.strerror}") from exc


def plot_convergence(result: SimulationResult, path: Path) -> None:
    """PNG: one panel per global metric over rounds, baselines as horizontal lines."""
    rounds, curves = result_curves(result)
    baselines: dict[str, dict[str, float]] = {}
    cmp = smallest_bank_comparison(result)
    if cmp is not None:
        local = result.final["baselines"]["local"]
        baselines[f"local only ({cmp['bank']}, smallest, non-private)"] = (
            local["banks"][cmp["bank"]]["global"])
    central = result.final.get("baselines", {}).get("centralized")
    if central is not None:
        # Baselines train without DP, whatever the federation does.
        baselines["centralised (non-private)"] = central["global"]
    _plot_panels(
        {str(result.config["strategy"]): (rounds, curves)}, list(curves), baselines, path,
        title=f"{result.config['strategy']}: global model per round",
    )


def plot_comparison(
    runs: Mapping[str, tuple[Sequence[int], Mapping[str, Sequence[float]]]],
    metrics: Sequence[str],
    path: Path,
    *,
    title: str,
) -> None:
    """PNG comparing several runs' curves, e.g. FedAvg vs FedProx per straggler setting."""
    _plot_panels(runs, metrics, {}, path, title=title)


def _plot_panels(
    runs: Mapping[str, tuple[Sequence[int], Mapping[str, Sequence[float]]]],
    metrics: Sequence[str],
    baselines: Mapping[str, Mapping[str, float]],
    path: Path,
    *,
    title: str,
) -> None:
    check_plot_path(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
    flat_axes = list(axes.ravel())
    for ax in flat_axes[len(metrics) :]:
        ax.set_visible(False)
    for ax, metric in zip(flat_axes, metrics, strict=False):
        for label, (rounds, curves) in runs.items():
            ax.plot(rounds, curves[metric], label=label, linewidth=1.6)
        for (label, values), style in zip(baselines.items(), ("--", ":"), strict=False):
            value = values.get(metric)
            if value is not None and not math.isnan(value):
                ax.axhline(value, linestyle=style, color="grey", label=label)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise FraudflError(f"{path}: cannot write plot: {exc.strerror}") from exc
    finally:
        plt.close(fig)


def result_curves(result: SimulationResult) -> tuple[list[int], dict[str, list[float]]]:
    """Rounds and per-metric global curves of a result (for :func:`plot_comparison`)."""
    names: list[str] = [*metric_names(result.task), "train_loss"]
    curves = {n: [r.global_metrics[n] for r in result.rounds] for n in names}
    return [r.round for r in result.rounds], curves



def personalization_table(report: Mapping[str, Any]) -> Table:
    """Per-bank AUPRC of the global and the personalised model on each bank's validation
    split (``final["personalization"]`` of a simulation's results)."""
    table = Table(
        title=f"personalisation ({report['method']}): AUPRC on each bank's validation"
    )
    for name in ("bank", "val rows", "val frauds", "global", "personal", "change"):
        table.add_column(name, justify="left" if name == "bank" else "right")
    for b in report["banks"]:
        g = b["global"].get("auprc", math.nan)
        p = b["personal"].get("auprc", math.nan)
        gain = p / g - 1 if g and math.isfinite(g) and math.isfinite(p) else math.nan
        table.add_row(b["bank_id"], str(b["num_val"]), str(b["num_val_fraud"]), _fmt(g), _fmt(p),
                      f"{gain:+.1%}")
    table.add_row("mean", "", "", _fmt(report["mean_global_auprc"]),
                  _fmt(report["mean_personal_auprc"]), f"{report['mean_relative_gain']:+.1%}")
    if report["declined"]:
        table.caption = ("over their privacy budget, kept the global model: "
                         + ", ".join(report["declined"]))
    return table
