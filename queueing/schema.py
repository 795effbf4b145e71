"""The `queue_jobs` and `failed_jobs` tables as SQLAlchemy sees them at run time.

Times the queue compares (`available_at`, `reserved_until`) are integer
epoch milliseconds: exact, indexable and the same on every engine. Times a
person reads (`created_at`, `failed_at`) are timestamps with time zone where
the engine has them. The migrations `craft queue:table` writes create these
same columns.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects import mysql


class MissingTableError(RuntimeError):
    """A queue table (`queue_jobs`, `failed_jobs`) does not exist on a connection.

    The message gives both steps that make it, since only the project knows
    whether the migration file exists yet; `craft` names the one that is
    missing when it reports the error.
    """

    def __init__(self, table: str, connection: str) -> None:
        self.table = table
        self.connection = connection
        flag = "--jobs" if table == "queue_jobs" else "--failed"
        super().__init__(
            f"table {table} does not exist on connection {connection!r}: run craft migrate "
            f"(after craft queue:table {flag} if databases/migrations has no {table} migration)"
        )


metadata = MetaData()

Identifier = BigInteger().with_variant(Integer(), "sqlite")
Payload = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

queue_jobs = Table(
    "queue_jobs",
    metadata,
    Column("id", Identifier, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("queue", String(191), nullable=False),
    Column("name", String(255), nullable=False),
    Column("payload", Payload, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    # Due time; while a job is reserved it holds the end of the lease, so one
    # index serves both "due" and "lease expired".
    Column("available_at", BigInteger, nullable=False),
    Column("reserved_until", BigInteger, nullable=True),
    Column("reserved_by", String(255), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("queue_jobs_queue_available_at_index", "queue", "available_at", "id"),
)

failed_jobs = Table(
    "failed_jobs",
    metadata,
    Column("id", Identifier, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("driver", String(32), nullable=False),
    Column("connection", String(64), nullable=True),
    Column("queue", String(191), nullable=False),
    Column("name", String(255), nullable=False),
    Column("payload", Payload, nullable=False),
    Column("reason", String(32), nullable=False),
    Column("exception_type", String(255), nullable=False),
    Column("message", LongText, nullable=False),
    Column("traceback", LongText, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("created", String(64), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("failed_at", DateTime(timezone=True), nullable=False),
    Index("failed_jobs_failed_at_index", "failed_at"),
)
