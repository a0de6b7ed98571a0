"""The console the subcommands print their tables to."""

from __future__ import annotations

from rich.console import Console

# Wide enough for any table this CLI prints; tables are only as wide as their content.
_UNBOUNDED_WIDTH = 10_000


def output_console() -> Console:
    """Standard output as a rich console that never cuts a value.

    On a terminal rich fits tables to its width; piped or redirected it assumes 80 columns and
    elides cells ("bank_…"), so a script reading the output would silently get partial values.
    """
    console = Console()
    if console.is_terminal:
        return console
    return Console(width=_UNBOUNDED_WIDTH)
