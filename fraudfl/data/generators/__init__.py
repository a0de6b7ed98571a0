"""Dataset generators writing the dataset directory format (``docs/data.md``)."""

from fraudfl.data.generators.banks import bank_schema, bank_sizes, generate_bank_data
from fraudfl.data.generators.fedprox_synthetic import generate_fedprox_synthetic

__all__ = ["bank_schema", "bank_sizes", "generate_bank_data", "generate_fedprox_synthetic"]
