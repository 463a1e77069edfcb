"""CLI commands of this package (registered by mffmoe.cli through COMMAND_MODULES)."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to the `mffmoe` app."""
