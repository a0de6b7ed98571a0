"""Errors a user can cause (bad data, config, flags, keys).

The CLI turns a :class:`FraudflError` into one line on stderr and a non-zero exit,
never a traceback.
"""


class FraudflError(Exception):
    """An error caused by user input; its message names the file/field and what is expected."""
