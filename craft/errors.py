"""The error a command raises to stop with one clear line, and the line for any other error."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import click

from container import ResolutionError
from craft.migrations import Migrator
from providers import ConfigurationError
from queueing import MissingKeyError, UnknownDriverError
from queueing.connections import UnknownConnectionError
from queueing.drivers.base import DriverUnavailableError
from queueing.operations import NoSuchFailedJobError
from queueing.schema import MissingTableError

# Errors an operator can fix from their message alone: shown without their class.
OPERATOR_ERRORS: tuple[type[BaseException], ...] = (
    ConfigurationError,
    DriverUnavailableError,
    MissingKeyError,
    MissingTableError,
    NoSuchFailedJobError,
    ResolutionError,
    UnknownConnectionError,
    UnknownDriverError,
)


class CraftError(click.ClickException):
    """Reported as `craft: <message>` on stderr, exit status 1."""

    def show(self, file: IO[Any] | None = None) -> None:
        """Print the one line."""
        click.echo(f"craft: {self.format_message()}", err=True)


def explain(error: BaseException, root: Path | None = None) -> str:
    """Return one line saying what went wrong and, where we know it, what fixes it.

    A missing table gets the one step that is missing in the project at
    `root` (default: the current directory): `craft migrate` when the
    migration is written, `craft queue:table` first when it is not. Errors
    an operator can act on read as their message; anything else is a bug
    somewhere and keeps its class name.
    """
    if isinstance(error, MissingTableError):
        return _missing_table(error, root or Path.cwd())
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, OPERATOR_ERRORS) and message:
        return message
    return f"{type(error).__name__}: {message}".rstrip(": ")


def _missing_table(error: MissingTableError, root: Path) -> str:
    where = f"table {error.table} does not exist on connection {error.connection!r}"
    migrate = "craft migrate"
    default = _default_connection()
    if default is not None and error.connection != default:
        migrate += f" --connection {error.connection}"
    if Migrator(root).written(error.table):
        return f"{where}: run {migrate}"
    flag = "--jobs" if error.table == "queue_jobs" else "--failed"
    return f"{where}: run craft queue:table {flag}, then {migrate}"


def _default_connection() -> str | None:
    """The connection `craft migrate` uses when given none, if the project says."""
    from craft.application import connections  # craft.application raises CraftError

    try:
        return connections().default
    except Exception:
        return None
