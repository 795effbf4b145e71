"""PostgreSQL helpers for the I/O-bound rows, in the database the run names.

`bench.servers` always talks to the `test` database; this benchmark takes
its database as an option, so the test suite's can be left alone.
"""

from __future__ import annotations

import contextlib
import urllib.parse

from bench import servers


def postgres_dsn(database: str, schema: str | None = None, *settings: str) -> str:
    """A libpq URL for `database` on the local server, `search_path` and `settings` set."""
    options = ([f"-csearch_path={schema}"] if schema else []) + [f"-c{item}" for item in settings]
    dsn = f"postgresql://root@{servers.HOST}:5432/{database}"
    if options:
        dsn += "?options=" + urllib.parse.quote(" ".join(options))
    return dsn


def postgres_execute(database: str, *statements: str) -> None:
    """Run `statements` on `database` in autocommit."""
    import psycopg

    with psycopg.connect(postgres_dsn(database), autocommit=True, connect_timeout=5) as connection:
        for statement in statements:
            connection.execute(statement)  # type: ignore[arg-type]


def postgres_count(database: str, schema: str, query: str) -> int:
    """The number `query` counts in `schema` (0 when its table is gone)."""
    import psycopg

    with (
        psycopg.connect(postgres_dsn(database, schema), connect_timeout=5) as connection,
        contextlib.suppress(psycopg.errors.UndefinedTable),
    ):
        row = connection.execute(query).fetchone()  # type: ignore[arg-type]
        return int(row[0]) if row else 0
    return 0


def recreate_schema(database: str, schema: str) -> None:
    """Drop `schema` with everything in it, then create it empty."""
    postgres_execute(
        database, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE', f'CREATE SCHEMA "{schema}"'
    )


def drop_schema(database: str, schema: str) -> None:
    """Drop `schema` with everything in it."""
    postgres_execute(database, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
