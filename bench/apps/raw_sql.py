"""Raw floor worker: a plain SQL loop, one job per transaction.

`python -m bench.apps.raw_sql postgresql|sqlite [--stop-when-empty]` takes the
oldest due job of `$BENCH_QUEUE` from table `raw_jobs`, runs its no-op job and
deletes it, each in one transaction:

- PostgreSQL (`$BENCH_DSN`): `SELECT ... FOR UPDATE SKIP LOCKED`, then `DELETE`.
- SQLite (`$BENCH_SQLITE_PATH`, WAL): `BEGIN IMMEDIATE`, `SELECT`, `DELETE`.

When nothing is due it exits (`--stop-when-empty`) or sleeps `POLL`
seconds. It stops by itself after `$BENCH_MAX_SECONDS`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from bench.probe import record

POLL = 0.05
SELECT = (
    "SELECT id, payload FROM raw_jobs WHERE queue = {p} AND available_at <= {p} "
    "ORDER BY available_at, id LIMIT 1"
)
DELETE = "DELETE FROM raw_jobs WHERE id = {p}"


def postgres_step() -> Callable[[], bool]:
    """Return one reserve-run-delete transaction on PostgreSQL (True when a job ran)."""
    import psycopg

    connection = psycopg.connect(os.environ["BENCH_DSN"], autocommit=True)
    queue = os.environ["BENCH_QUEUE"]
    select = SELECT.format(p="%s") + " FOR UPDATE SKIP LOCKED"
    delete = DELETE.format(p="%s")

    def step() -> bool:
        with connection.transaction():
            row = connection.execute(select, (queue, int(time.time() * 1000))).fetchone()
            if row is None:
                return False
            record(int(row[1]))
            connection.execute(delete, (row[0],))
        return True

    return step


def sqlite_step() -> Callable[[], bool]:
    """Return one reserve-run-delete transaction on SQLite (True when a job ran)."""
    connection = sqlite_connection(os.environ["BENCH_SQLITE_PATH"])
    queue = os.environ["BENCH_QUEUE"]
    select, delete = SELECT.format(p="?"), DELETE.format(p="?")

    def step() -> bool:
        connection.execute("BEGIN IMMEDIATE")
        try:
            row = connection.execute(select, (queue, int(time.time() * 1000))).fetchone()
            if row is not None:
                record(int(row[1]))
                connection.execute(delete, (row[0],))
        finally:
            connection.execute("COMMIT")
        return row is not None

    return step


def sqlite_connection(path: str):  # type: ignore[no-untyped-def]
    """An autocommit SQLite connection with the pragmas our database driver uses."""
    import sqlite3

    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA busy_timeout=30000")
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


def main() -> None:
    """Run the loop until empty (with --stop-when-empty), stopped, or out of time."""
    step = postgres_step() if sys.argv[1] == "postgresql" else sqlite_step()
    stop_when_empty = "--stop-when-empty" in sys.argv[2:]
    deadline = time.monotonic() + float(os.environ.get("BENCH_MAX_SECONDS", "3600"))
    while time.monotonic() < deadline:
        if not step():
            if stop_when_empty:
                return
            time.sleep(POLL)


if __name__ == "__main__":
    main()
