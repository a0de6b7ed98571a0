"""Messy bank data: federated vs each bank alone vs pooled, with an outside tree reference.

On a dataset from ``generate-data banks --messy`` (missing values, hashed merchant/device ids,
heavy-tailed amounts, a time column) one run measures, all on the same global test set:

* fraudfl's logistic regression and MLP trained federated (FedProx, every bank every round,
  ``fraudfl simulate``'s defaults) without DP and with record-level DP at epsilon 3, each bank
  alone (local-only baseline: the same local work), and pooled
  (centralised baseline: all training rows in one place);
* scikit-learn's ``HistGradientBoostingClassifier`` pooled and per bank, on the same feature
  matrices (quantile-transformed numerics, missing indicators, one-hot and hashed categoricals,
  time features), as the reference a bank could reach alone with a strong off-the-shelf model.

Prints one AUPRC table (local-only as the smallest / median / largest bank's model).

    .venv/bin/python benchmarks/real_data.py
    .venv/bin/python benchmarks/real_data.py --banks 5 --transactions 30000 --seed 3 --rounds 10 \
        --local-epochs 3 --update-weight examples
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier

from fraudfl.data import load_dataset
from fraudfl.data.generators import generate_bank_data
from fraudfl.privacy.options import PrivacyOptions
from fraudfl.simulation import PreparedData, SimulationConfig, prepare_data, run_simulation
from fraudfl.training.evaluation import binary_ranking_metrics


def fraudfl_rows(dataset: Any, args: argparse.Namespace, model: str) -> dict[str, Any]:
    common = dict(strategy="fedprox", mu=args.mu, rounds=args.rounds, banks_per_round=args.banks,
                  local_epochs=args.local_epochs, seed=args.seed, model=model,
                  val_fraction=args.val_fraction, update_weight=args.update_weight)
    t0 = time.perf_counter()
    plain = run_simulation(dataset, SimulationConfig(**common, baseline="all"))
    private = run_simulation(
        dataset,
        SimulationConfig(**common, privacy=PrivacyOptions(target_epsilon=args.epsilon)),
    )
    baselines = plain.final["baselines"]
    local = {bank: v["global"]["auprc"] for bank, v in baselines["local"]["banks"].items()}
    return {
        "federated": plain.final["auprc"],
        "federated_dp": private.final["auprc"],
        "pooled": baselines["centralized"]["global"]["auprc"],
        "local": local,
        "seconds": time.perf_counter() - t0,
    }


def hgb_rows(data: PreparedData, seed: int) -> dict[str, Any]:
    t0 = time.perf_counter()

    def fit_score(X: np.ndarray, y: np.ndarray) -> float:
        model = HistGradientBoostingClassifier(random_state=seed)
        model.fit(X, y)
        return binary_ranking_metrics(data.y_test, model.predict_proba(data.X_test)[:, 1])[
            "auprc"]

    pooled = fit_score(np.concatenate([b.X_train for b in data.banks]),
                       np.concatenate([b.y_train for b in data.banks]))
    local = {b.bank_id: fit_score(b.X_train, b.y_train) for b in data.banks}
    return {"pooled": pooled, "local": local, "seconds": time.perf_counter() - t0}


def local_summary(local: dict[str, float], sizes: dict[str, int]) -> str:
    by_size = sorted(local, key=lambda b: sizes[b])
    values = [local[b] for b in by_size]
    return (f"{values[0]:.3f} / {statistics.median(values):.3f} / {values[-1]:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--banks", type=int, default=5)
    p.add_argument("--transactions", type=int, default=30_000)
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--local-epochs", type=int, default=3)
    p.add_argument("--mu", type=float, default=0.1)
    p.add_argument("--epsilon", type=float, default=3.0)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--update-weight", choices=["constant", "examples"], default="examples",
                   help="banks' update weights: by examples (FedAvg) or equal (the services' "
                   "default, no example count leaves a bank)")
    p.add_argument("--data", type=Path, help="an existing dataset directory instead")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", module="opacus")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            root = generate_bank_data(Path(tmp) / "banks", n_banks=args.banks,
                                      total_transactions=args.transactions, seed=args.seed,
                                      messy=True)
        dataset = load_dataset(root)
        data = prepare_data(dataset, args.val_fraction, args.seed)
        sizes = {b.bank_id: len(b.y_train) for b in data.banks}
        rows = {model: fraudfl_rows(dataset, args, model) for model in ("logistic", "mlp")}
        hgb = hgb_rows(data, args.seed)
    frauds = int(data.y_test.sum())
    print(f"messy data: {len(sizes)} banks, train rows {sorted(sizes.values())}, test "
          f"{len(data.y_test)} rows ({frauds} frauds), {data.num_features} features; "
          f"AUPRC on the test set; local = smallest / median / largest bank's own model")
    print(f"| model | federated | federated eps={args.epsilon:g} | pooled | local | seconds |")
    print("|---|---|---|---|---|---|")
    for model, r in rows.items():
        print(f"| {model} | {r['federated']:.3f} | {r['federated_dp']:.3f} | {r['pooled']:.3f} | "
              f"{local_summary(r['local'], sizes)} | {r['seconds']:.0f} |")
    print(f"| HistGradientBoosting | - | - | {hgb['pooled']:.3f} | "
          f"{local_summary(hgb['local'], sizes)} | {hgb['seconds']:.0f} |")
    mlp = rows["mlp"]
    print(f"MLP: federated - pooled = {mlp['federated'] - mlp['pooled']:+.3f}; federated above "
          f"every bank's local-only MLP: {all(mlp['federated'] > v for v in mlp['local'].values())}"
          f"; DP/non-DP = {mlp['federated_dp'] / mlp['federated']:.0%}")


if __name__ == "__main__":
    main()
