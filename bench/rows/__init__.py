"""The rows of the benchmark table, in the order they are shown.

Importing this package imports no queue library: each row imports what it
measures only inside the processes that use it.
"""

from __future__ import annotations

from bench.rows.base import Row
from bench.rows.ours import AmqpRow, AsyncRow, DatabaseRow, SyncRow
from bench.rows.peers import (
    CeleryRow,
    DramatiqRow,
    HueyRow,
    PgqueuerRow,
    ProcrastinateRow,
    RqRow,
)
from bench.rows.raw import PikaRow, SqlRow, ThreadPoolRow


def all_rows() -> list[Row]:
    """Every row: ours, then the raw floors, then the peers."""
    return [
        AmqpRow(),
        DatabaseRow("pgsql", "postgresql", floor="raw-postgresql"),
        DatabaseRow("mysql", "mariadb", floor=None),
        DatabaseRow("sqlite", "sqlite", floor="raw-sqlite"),
        AsyncRow(),
        SyncRow(),
        PikaRow(),
        SqlRow("postgresql"),
        SqlRow("sqlite"),
        ThreadPoolRow(),
        CeleryRow(),
        DramatiqRow(),
        RqRow(),
        HueyRow(),
        ProcrastinateRow(),
        PgqueuerRow(),
    ]
