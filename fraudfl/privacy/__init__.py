"""Differential privacy: per-bank accountants with saved state, budgets, bank-level update DP."""
