"""DP-SGD overhead: one local epoch with DP / without DP for the fraud MLP (issue 15 target: < 2x).

Everything is measured in one run, interleaved (plain, vectorized, ghost, hooks, functorch,
plain, ...) so that load from other processes hits all modes alike; the ratio is of medians. A
"local epoch" is one call of the trainer the simulation uses for one round of
``local_epochs=1``: ``train_local`` without DP, ``train_private`` with DP (set-up, Poisson
sampling, clipping, noise, accounting through the bank's accountant).

The floor is the plain epoch (the ``plain s`` column, every ratio is against it); ``sampling s``
is the part of it no engine equal to Opacus can avoid: Poisson sampling draws one uniform per
record per step (``torch.rand(n)`` with the loader's generator), n x steps draws an epoch.

    .venv/bin/python benchmarks/dp_overhead.py
    .venv/bin/python benchmarks/dp_overhead.py --batch-sizes 64,256 --repeats 7 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fraudfl.data import load_dataset
from fraudfl.data.generators import generate_bank_data
from fraudfl.models import ModelSpec, get_flat_params
from fraudfl.privacy.accountant import PrivacyAccountant, PrivacyBudget
from fraudfl.simulation import prepare_data
from fraudfl.training.local import TrainConfig, train_local
from fraudfl.training.private import DPConfig, train_private


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--transactions", type=int, default=100_000)
    ap.add_argument("--banks", type=int, default=4)
    ap.add_argument("--batch-sizes", default="64,256")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (simulation default 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = generate_bank_data(Path(tmp) / "data", n_banks=args.banks,
                                  total_transactions=args.transactions, seed=0)
        data = prepare_data(load_dataset(root), val_fraction=0.2, seed=0)
    bank = max(data.banks, key=lambda b: len(b.y_train))
    X, y = bank.X_train, bank.y_train
    spec = ModelSpec("mlp", data.num_features, 2, (64, 32))
    model = spec.build(seed=0)
    start = get_flat_params(model)
    print(f"fraud MLP {data.num_features}-64-32-1 ({spec.num_params} parameters), bank "
          f"{bank.bank_id}: {len(y)} training records, torch threads {args.threads}")
    engines = ("vectorized", "ghost", "hooks", "functorch")
    print(f"{'batch':>6} {'steps':>6} {'plain s':>8} {'sampling s':>11} " + " ".join(
        f"{m + ' s':>12} {m + '/plain':>17}" for m in engines))

    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        cfg = TrainConfig(batch_size=batch_size, lr=0.05, local_epochs=1)

        def plain(cfg: TrainConfig = cfg) -> None:
            train_local(model, start, X, y, cfg, rng=np.random.default_rng(0))

        def private(mode: str, cfg: TrainConfig = cfg) -> Callable[[], None]:
            def run() -> None:
                acc = PrivacyAccountant("rdp", budget=PrivacyBudget(1e6, 1e-6))
                train_private(model, start, X, y, cfg, rng=np.random.default_rng(0),
                              accountant=acc, dp=DPConfig(1.0, 1.0, mode))  # type: ignore[arg-type]
            return run

        def sampling(steps: int = cfg.planned_steps(len(y))) -> None:
            generator = torch.Generator().manual_seed(0)
            for _ in range(steps):
                torch.rand(len(y), generator=generator)

        modes = {"plain": plain, "sampling": sampling} | {m: private(m) for m in engines}
        for fn in modes.values():  # warm-up: first-call costs are not per-epoch costs
            fn()
        times: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.repeats):
            for name, fn in modes.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        med = {m: statistics.median(t) for m, t in times.items()}
        print(f"{batch_size:>6} {cfg.planned_steps(len(y)):>6} {med['plain']:>8.3f} "
              f"{med['sampling']:>11.3f} " + " ".join(
                  f"{med[m]:>12.3f} {med[m] / med['plain']:>16.2f}x" for m in engines))


if __name__ == "__main__":
    main()
