"""Fixtures the CLI tests share with the modules they drive."""

from tests.scoring.conftest import trained_bank  # noqa: F401  (a scoring model for serve and score)
