"""Personalisation per bank: AUPRC of the global model vs fine-tuning, Ditto and FedPer, each on
the bank's own validation split, with and without DP, on heterogeneous synthetic bank data.

Every run is the round engine (`fraudfl simulate`): the banks personalise with their own
participant's code, DP personal training is charged to the same accountant as the rounds (the
table shows the epsilon each bank ends with). FedPer is compared with the global model of the
same federation without personal layers.

    .venv/bin/python benchmarks/personalization.py
    .venv/bin/python benchmarks/personalization.py --transactions 60000 --rounds 8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fraudfl.data import load_dataset
from fraudfl.data.generators import generate_bank_data
from fraudfl.privacy.options import PrivacyOptions
from fraudfl.simulation import SimulationConfig, run_simulation

METHODS = ("finetune", "ditto", "fedper")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--banks", type=int, default=5)
    parser.add_argument("--transactions", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epsilon", type=float, default=8.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_bank_data(Path(tmp) / "data", n_banks=args.banks,
                                  total_transactions=args.transactions, seed=3,
                                  feature_shift=2.0, label_skew=1.0)
        dataset = load_dataset(root)
        table = Table(title="mean AUPRC on each bank's validation split")
        for col in ("method", "DP", "global", "personal", "relative gain", "max epsilon",
                    "seconds"):
            table.add_column(col)
        for dp in (False, True):
            privacy = PrivacyOptions(target_epsilon=args.epsilon) if dp else None
            for method in METHODS:
                started = time.perf_counter()
                config = SimulationConfig(rounds=args.rounds, banks_per_round=args.banks,
                                          personalization=method, privacy=privacy)
                report = run_simulation(dataset, config).final["personalization"]
                eps = max(report.get("epsilon", {}).values(), default=float("nan"))
                table.add_row(method, f"eps {args.epsilon:g}" if dp else "-",
                              f"{report['mean_global_auprc']:.4f}",
                              f"{report['mean_personal_auprc']:.4f}",
                              f"{report['mean_relative_gain']:+.1%}", f"{eps:.3f}",
                              f"{time.perf_counter() - started:.1f}")
        Console().print(table)


if __name__ == "__main__":
    main()
