"""`craft queue:table`, `craft migrate`, `craft migrate:status`, `craft migrate:rollback`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click
from sqlalchemy.exc import OperationalError

from craft.application import engine_for
from craft.errors import CraftError
from craft.migrations import MigrationError, Migrator

T = TypeVar("T")

connection_option = click.option(
    "--connection",
    "-c",
    default=None,
    help="Connection from config/database.py (default: DEFAULT).",
)


def _migrator() -> Migrator:
    return Migrator(Path.cwd())


def _guard(action: Callable[[], T]) -> T:
    try:
        return action()
    except MigrationError as error:
        raise CraftError(str(error)) from error
    except OperationalError as error:
        raise CraftError(f"cannot reach the database: {str(error.orig).splitlines()[0]}") from error


@click.command("queue:table")
@click.option("--jobs", is_flag=True, help="Write the queue_jobs migration.")
@click.option("--failed", is_flag=True, help="Write the failed_jobs migration (the default).")
def queue_table(jobs: bool, failed: bool) -> None:
    """Write migrations for the queue tables into databases/migrations/."""
    tables = (["jobs"] if jobs else []) + (["failed"] if failed or not jobs else [])
    for table in tables:
        path = _guard(functools.partial(_write, table))
        click.echo(f"created {path.relative_to(Path.cwd())}")


def _write(table: str) -> Path:
    return _migrator().write(table)


@click.command("migrate")
@connection_option
def migrate(connection: str | None) -> None:
    """Apply the pending migrations."""
    engine = engine_for(connection)
    applied = _guard(lambda: _migrator().migrate(engine))
    if not applied:
        click.echo("nothing to migrate")
    for revision in applied:
        click.echo(f"migrated {revision}")


@click.command("migrate:status")
@connection_option
def migrate_status(connection: str | None) -> None:
    """List the migrations and whether each ran."""
    states = _guard(lambda: _migrator().status(engine_for(connection)))
    if not states:
        click.echo("no migrations in databases/migrations/")
    for state in states:
        ran = f"ran (batch {state.batch})" if state.ran else "pending"
        click.echo(f"{ran:<16} {state.path}")


@click.command("migrate:rollback")
@connection_option
def migrate_rollback(connection: str | None) -> None:
    """Undo the migrations applied by the last `craft migrate`."""
    undone = _guard(lambda: _migrator().rollback(engine_for(connection)))
    if not undone:
        click.echo("nothing to roll back")
    for revision in undone:
        click.echo(f"rolled back {revision}")
