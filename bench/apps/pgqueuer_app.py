"""pgqueuer on PostgreSQL (psycopg driver): the factory and the worker.

`python -m bench.apps.pgqueuer_app` does what `pgq run bench.apps.pgqueuer_app:main`
does: `PgQueuer.run()` with its defaults (batch 10, LISTEN/NOTIFY) on uvloop
when installed. (`pgq run` itself fails in pgqueuer 1.6.0 while setting up
its logging with the default `--log-level`.)

The connection string is `$BENCH_DSN`; the tables live in the schema
`$PGQUEUER_SCHEMA` (read by pgqueuer itself).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from pgqueuer import PgQueuer
from pgqueuer.db import PsycopgDriver
from pgqueuer.models import Job

from bench.probe import record

ENTRYPOINT = "bench_noop"


@asynccontextmanager
async def main() -> AsyncIterator[PgQueuer]:
    """Connect and register the no-op entrypoint."""
    connection = await psycopg.AsyncConnection.connect(os.environ["BENCH_DSN"], autocommit=True)
    queuer = PgQueuer(PsycopgDriver(connection))

    @queuer.entrypoint(ENTRYPOINT)
    async def noop(job: Job) -> None:
        record(int(job.payload or b"0"))

    try:
        yield queuer
    finally:
        await connection.close()


async def serve() -> None:
    """Run the queuer until the process is stopped."""
    async with main() as queuer:
        await queuer.run()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve())
    else:
        uvloop.run(serve())
