"""The rows of the I/O-bound table, in the order they are shown.

Importing this module imports no queue library: each row imports what it
measures only inside the processes that use it.
"""

from __future__ import annotations

from bench.io.base import IoRow
from bench.io.floor import FloorRow
from bench.io.ours import OursAmqpRow, OursPostgresRow
from bench.io.peers import ArqRow, DramatiqRow, ProcrastinateRow


def all_rows() -> list[IoRow]:
    """Every row, in the order of the table."""
    return [
        FloorRow(),
        OursAmqpRow(),
        OursPostgresRow(),
        ProcrastinateRow(),
        DramatiqRow(),
        ArqRow(),
    ]
