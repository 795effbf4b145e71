"""Huey with its SQLite storage: the instance and the no-op task its consumer loads.

The database file is `$BENCH_HUEY_PATH`; Huey's defaults otherwise.
"""

from __future__ import annotations

import os

from huey import SqliteHuey

from bench.probe import record

huey = SqliteHuey(name="bench", filename=os.environ["BENCH_HUEY_PATH"])


@huey.task()
def noop(seq: int) -> None:
    """Record the start."""
    record(seq)
