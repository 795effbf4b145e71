"""procrastinate on PostgreSQL: the app and the no-op task its worker loads.

The connection string is `$BENCH_PROCRASTINATE_DSN` (its search_path is the
benchmark's own schema); procrastinate's defaults otherwise (LISTEN/NOTIFY
on, finished jobs kept).
"""

from __future__ import annotations

import os

from procrastinate import App, PsycopgConnector

from bench.probe import record

QUEUE = os.environ.get("BENCH_QUEUE", "queue-bench")

app = App(connector=PsycopgConnector(conninfo=os.environ.get("BENCH_PROCRASTINATE_DSN", "")))


@app.task(name="bench.noop", queue=QUEUE)
def noop(seq: int) -> None:
    """Record the start."""
    record(seq)
