"""``fraudfl generate-data``: write a synthetic dataset in the dataset directory format.

Kinds:
  banks              multi-bank card transactions with shared fraud rings and bank-specific
                     fraud; bank sizes follow a power law, fraud rates and feature
                     distributions differ between banks
  fedprox-synthetic  the FedProx paper's Synthetic(alpha, beta) (30 devices, 10 classes)

The directory holds one file per bank, a global test file and schema.toml (docs/data.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from fraudfl.cli.console import output_console
from fraudfl.errors import FraudflError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "generate-data",
        help="write a synthetic multi-bank (or FedProx Synthetic) dataset directory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)

    banks = kinds.add_parser(
        "banks",
        help="synthetic multi-bank card transactions (binary fraud label)",
        description="Synthetic card transactions for several banks. Fraud comes from four rings "
        "shared across banks (each hitting mostly different banks), one pattern per bank and "
        "near-legitimate opportunistic fraud.",
    )
    _common(banks)
    banks.add_argument(
        "--banks", type=int, default=8, help="number of banks (default: %(default)s)"
    )
    banks.add_argument(
        "--transactions",
        type=int,
        default=200_000,
        help="total rows, test rows included (default: %(default)s)",
    )
    banks.add_argument(
        "--fraud-rate", type=float, default=0.005, help="mean fraud rate (default: %(default)s)"
    )
    banks.add_argument(
        "--size-power-law",
        type=float,
        default=1.2,
        help="bank k's size is proportional to (k+1)^-this (0: equal sizes) (default: %(default)s)",
    )
    banks.add_argument(
        "--label-skew",
        type=float,
        default=0.5,
        help="spread of per-bank fraud rates: log-normal sigma, 0 = same rate everywhere "
        "(default: %(default)s)",
    )
    banks.add_argument(
        "--feature-shift",
        type=float,
        default=0.5,
        help="how much legitimate behaviour differs between banks, 0 = identical "
        "(default: %(default)s)",
    )
    banks.add_argument(
        "--messy",
        action="store_true",
        help="real-export style: per-bank and informative missing values, high-cardinality "
        "merchant/device ids, heavy-tailed amounts, an ISO timestamp as the time column",
    )
    banks.add_argument(
        "--ring-locality",
        type=float,
        default=0.9,
        help="share of a bank's ring fraud that comes from its home ring, 0.25 = none "
        "(default: %(default)s)",
    )
    banks.add_argument(
        "--format",
        choices=["csv", "parquet"],
        default="csv",
        dest="file_format",
        help="file type (default: %(default)s)",
    )
    banks.set_defaults(func=run)

    fedprox = kinds.add_parser(
        "fedprox-synthetic",
        help="the FedProx paper's Synthetic(alpha, beta) (multi-class)",
        description="Synthetic(alpha, beta) of Li et al. 2020 (FedProx): per-device models "
        "W_k, b_k ~ N(u_k, 1) with u_k ~ N(0, alpha) and inputs x ~ N(v_k, diag(j^-1.2)) with "
        "v_k ~ N(B_k, 1), B_k ~ N(0, beta); y = argmax(x W_k + b_k). Device sizes "
        "int(lognormal(4, 2)) + 50. --iid: one W, b for all devices and x ~ N(0, Sigma).",
    )
    _common(fedprox)
    fedprox.add_argument(
        "--alpha", type=float, default=1.0, help="model heterogeneity (default: %(default)s)"
    )
    fedprox.add_argument(
        "--beta", type=float, default=1.0, help="input heterogeneity (default: %(default)s)"
    )
    fedprox.add_argument("--iid", action="store_true", help="the IID variant")
    fedprox.add_argument(
        "--devices", type=int, default=30, help="number of devices (default: %(default)s)"
    )
    fedprox.add_argument(
        "--features", type=int, default=60, help="input dimension (default: %(default)s)"
    )
    fedprox.add_argument(
        "--classes", type=int, default=10, help="number of classes (default: %(default)s)"
    )
    fedprox.add_argument(
        "--format",
        choices=["csv", "parquet"],
        default="csv",
        dest="file_format",
        help="file type (default: %(default)s)",
    )
    fedprox.set_defaults(func=run)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="share of every bank's rows held out in the global test file (default: %(default)s)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace dataset files already in --out (otherwise they are an error)",
    )


def run(args: argparse.Namespace) -> int:
    from fraudfl.data import load_dataset
    from fraudfl.data.generators import generate_bank_data, generate_fedprox_synthetic

    out: Path = args.out
    if args.kind == "banks":
        generate_bank_data(
            out,
            n_banks=args.banks,
            total_transactions=args.transactions,
            fraud_rate=args.fraud_rate,
            size_power_law=args.size_power_law,
            label_skew=args.label_skew,
            feature_shift=args.feature_shift,
            ring_locality=args.ring_locality,
            test_fraction=args.test_fraction,
            seed=args.seed,
            file_format=args.file_format,
            overwrite=args.overwrite,
            messy=args.messy,
        )
    elif args.kind == "fedprox-synthetic":
        generate_fedprox_synthetic(
            out,
            alpha=args.alpha,
            beta=args.beta,
            iid=args.iid,
            n_devices=args.devices,
            n_features=args.features,
            n_classes=args.classes,
            test_fraction=args.test_fraction,
            seed=args.seed,
            file_format=args.file_format,
            overwrite=args.overwrite,
        )
    else:
        raise FraudflError(f"unknown kind {args.kind!r}")
    # Reading the result back validates it and gives the summary from what was written.
    dataset = load_dataset(out)
    binary = dataset.schema.task == "binary"
    table = Table(title=f"{out} ({dataset.schema.task}, label '{dataset.schema.label}')")
    table.add_column("file")
    table.add_column("rows", justify="right")
    if binary:
        table.add_column("frauds", justify="right")
        table.add_column("fraud rate", justify="right")
    else:
        table.add_column("classes present", justify="right")
        table.add_column("majority class share", justify="right")
    frames = dict(dataset.banks)
    if dataset.test is not None:
        frames["test"] = dataset.test
    for name, frame in frames.items():
        labels = frame[dataset.schema.label]
        if binary:
            table.add_row(name, f"{len(frame):,}", f"{int(labels.sum()):,}", f"{labels.mean():.3%}")
        else:
            counts = labels.value_counts()
            table.add_row(
                name, f"{len(frame):,}", str(len(counts)), f"{counts.max() / len(frame):.1%}"
            )
    console = output_console()
    console.print(table)
    console.print(f"next: fraudfl simulate --data {out}")
    return 0
