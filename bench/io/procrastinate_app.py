"""procrastinate on PostgreSQL with an async task, run by `procrastinate worker --concurrency 100`.

The worker's connection string is `$BENCH_PROCRASTINATE_DSN`: the benchmark's
own schema, and `synchronous_commit = off` as our database worker's own
connection has it, so both settle jobs with the same commit durability.
"""

from __future__ import annotations

import os

from procrastinate import App, PsycopgConnector

from bench.io.work import sleep_job

QUEUE = os.environ.get("BENCH_QUEUE", "queue-bench-io")
TASK = "bench.io.sleep"

app = App(connector=PsycopgConnector(conninfo=os.environ.get("BENCH_PROCRASTINATE_DSN", "")))


@app.task(name=TASK, queue=QUEUE)
async def sleep(seq: int) -> None:
    """The shared body."""
    await sleep_job(seq)
