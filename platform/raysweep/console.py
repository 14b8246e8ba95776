"""The console raysweep prints to: rich only, so that `raysweep report` imports no Ray or torch."""

from __future__ import annotations

import sys

from rich.console import Console


def make_console() -> Console:
    """stdout; in logs (no terminal) wide enough that tables and status lines don't wrap."""
    console = Console(file=sys.stdout)
    if not console.is_terminal:
        console = Console(file=sys.stdout, width=200)
    return console
