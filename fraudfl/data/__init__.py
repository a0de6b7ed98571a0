"""Bank transaction data: schema, loading and validation, feature pipeline, generators.

See ``docs/data.md`` for the dataset directory format and the validation rules.
"""

from fraudfl.data.infer import infer_schema, infer_schema_report
from fraudfl.data.loading import FederatedDataset, load_bank_file, load_dataset, read_table
from fraudfl.data.pipeline import FeaturePipeline
from fraudfl.data.schema import Schema, load_schema, write_schema
from fraudfl.data.sketch import MISSING_BIN, BinMapper, bin_edges
from fraudfl.data.split import train_val_split
from fraudfl.data.stats import FeatureStats, compute_stats, sum_stats

__all__ = [
    "MISSING_BIN",
    "BinMapper",
    "FeaturePipeline",
    "FeatureStats",
    "FederatedDataset",
    "Schema",
    "bin_edges",
    "compute_stats",
    "infer_schema",
    "infer_schema_report",
    "load_bank_file",
    "load_dataset",
    "load_schema",
    "read_table",
    "sum_stats",
    "train_val_split",
    "write_schema",
]
