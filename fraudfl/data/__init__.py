"""Bank transaction data: schema, loading and validation, feature pipeline, generators.

See ``docs/data.md`` for the dataset directory format and the validation rules.
"""

from fraudfl.data.loading import FederatedDataset, load_bank_file, load_dataset, read_table
from fraudfl.data.pipeline import FeaturePipeline
from fraudfl.data.schema import Schema, infer_schema, load_schema, write_schema
from fraudfl.data.split import train_val_split
from fraudfl.data.stats import FeatureStats, compute_stats, sum_stats

__all__ = [
    "FeaturePipeline",
    "FeatureStats",
    "FederatedDataset",
    "Schema",
    "compute_stats",
    "infer_schema",
    "load_bank_file",
    "load_dataset",
    "load_schema",
    "read_table",
    "sum_stats",
    "train_val_split",
    "write_schema",
]
