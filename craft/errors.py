"""The error a command raises to stop with one clear line."""

from __future__ import annotations

from typing import IO, Any

import click


class CraftError(click.ClickException):
    """Reported as `craft: <message>` on stderr, exit status 1."""

    def show(self, file: IO[Any] | None = None) -> None:
        """Print the one line."""
        click.echo(f"craft: {self.format_message()}", err=True)
