"""Histogram gradient-boosted trees trained from summed (securely aggregated) histograms.

See ``docs/trees.md`` for the protocol, the vector layout, what is revealed and the DP
accounting. Nothing here imports torch.
"""

from fraudfl.trees.bank import TaskRefused, TreeBank
from fraudfl.trees.binning import BinEdges, edges_from_histograms, feature_histograms
from fraudfl.trees.ensemble import TreeEnsemble
from fraudfl.trees.federation import (
    BankData,
    FitResult,
    plain_sum,
    quantized_sum,
    train_federated,
)
from fraudfl.trees.histogram import HistogramLayout, pack, unpack
from fraudfl.trees.params import GBDTParams
from fraudfl.trees.privacy import TreeNoise, calibrate_tree_noise
from fraudfl.trees.protocol import TreeBuilder

__all__ = [
    "BankData",
    "BinEdges",
    "FitResult",
    "GBDTParams",
    "HistogramLayout",
    "TaskRefused",
    "TreeBank",
    "TreeBuilder",
    "TreeEnsemble",
    "TreeNoise",
    "calibrate_tree_noise",
    "edges_from_histograms",
    "feature_histograms",
    "pack",
    "plain_sum",
    "quantized_sum",
    "train_federated",
    "unpack",
]
