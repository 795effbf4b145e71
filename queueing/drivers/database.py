"""The `database` driver: jobs as rows of `queue_jobs` on SQLite, PostgreSQL or MySQL/MariaDB.

Reserving is atomic across any number of workers: PostgreSQL and MariaDB use
`SELECT ... FOR UPDATE SKIP LOCKED`; SQLite takes its write lock with
`BEGIN IMMEDIATE`. A reservation is a lease: the row's `available_at` is
moved to the end of the lease, so a job whose worker died becomes due again
once the lease runs out, and the worker extends the lease while the job runs.
Attempts are counted when a job is reserved, so a job that kills its worker
is not retried forever.

`channel` is the connection name from `config/database.py` (as in the seed);
the queue is a column, so one table serves many named queues.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pendulum
from sqlalchemy import and_, case, delete, func, insert, inspect, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from queueing.clock import Clock, SystemClock
from queueing.connections import Connections
from queueing.drivers.base import Driver, DriverUnavailableError
from queueing.payload import Envelope
from queueing.schema import queue_jobs


class DatabaseUnavailableError(DriverUnavailableError):
    """The database cannot be reached, or lacks the `queue_jobs` table."""


@dataclass(frozen=True)
class Reservation:
    """A job this worker holds: its envelope, its row and the lease token."""

    envelope: Envelope
    row_id: int
    token: str
    connection: str


@dataclass(frozen=True)
class QueueCounts:
    """How many jobs one queue holds, by state."""

    connection: str
    queue: str
    pending: int
    delayed: int
    reserved: int
    oldest_pending_age: float | None


def milliseconds(seconds: float) -> int:
    """Return epoch seconds as integer milliseconds."""
    return round(seconds * 1000)


class DatabaseDriver(Driver):
    """Stores jobs in `queue_jobs` and hands them out under a lease."""

    name = "database"

    def __init__(
        self,
        connections: Connections,
        connection: str | None = None,
        queue: str = "default",
        retry_after: float = 90.0,
        clock: Clock | None = None,
    ) -> None:
        if retry_after <= 0:
            raise ValueError(f"database driver: retry_after must be positive, not {retry_after!r}")
        self.connections = connections
        self.connection = connection or connections.default
        self.default_queue = queue
        self.retry_after = float(retry_after)
        self.clock = clock or SystemClock()

    def queue_for(self, channel: str | None, queue: str | None) -> str:
        """The channel names a connection here, so only `queue` picks the queue."""
        return queue or self.default_queue

    # Pushing ----------------------------------------------------------------------

    def push(self, envelopes: Sequence[Envelope], channel: str | None = None) -> None:
        """Insert every envelope in one transaction."""
        name = channel or self.connection
        created_at = dt.datetime.now(dt.UTC)
        rows = [
            {
                "uuid": envelope.id,
                "queue": envelope.queue,
                "name": envelope.name[:255],
                "payload": envelope.body,
                "attempts": envelope.attempts,
                "available_at": milliseconds(envelope.available_at),
                "reserved_until": None,
                "reserved_by": None,
                "created_at": created_at,
            }
            for envelope in envelopes
        ]
        with self._transaction(name, "push to") as connection:
            connection.execute(insert(queue_jobs), rows)

    # Working ----------------------------------------------------------------------

    def reserve(self, queues: Sequence[str], channel: str | None = None) -> Reservation | None:
        """Take the first due job of the first queue in `queues` that has one."""
        name = channel or self.connection
        for queue in queues:
            reservation = self._reserve_from(name, queue)
            if reservation is not None:
                return reservation
        return None

    def _reserve_from(self, name: str, queue: str) -> Reservation | None:
        now = milliseconds(self.clock.now())
        lease_end = now + milliseconds(self.retry_after)
        token = uuid.uuid4().hex
        with self._transaction(name, "reserve from") as connection:
            query = (
                select(
                    queue_jobs.c.id,
                    queue_jobs.c.uuid,
                    queue_jobs.c.name,
                    queue_jobs.c.payload,
                    queue_jobs.c.attempts,
                    queue_jobs.c.created_at,
                )
                .where(queue_jobs.c.queue == queue, queue_jobs.c.available_at <= now)
                .order_by(queue_jobs.c.available_at, queue_jobs.c.id)
                .limit(1)
            )
            if connection.dialect.name != "sqlite":
                query = query.with_for_update(skip_locked=True)
            row = connection.execute(query).first()
            if row is None:
                return None
            connection.execute(
                update(queue_jobs)
                .where(queue_jobs.c.id == row.id)
                .values(
                    attempts=queue_jobs.c.attempts + 1,
                    available_at=lease_end,
                    reserved_until=lease_end,
                    reserved_by=token,
                )
            )
        envelope = Envelope(
            id=row.uuid,
            name=row.name,
            queue=queue,
            driver=self.name,
            created=_iso(row.created_at),
            available_at=now / 1000,
            body=bytes(row.payload),
            attempts=row.attempts + 1,
            connection=name,
        )
        return Reservation(envelope, row.id, token, name)

    def extend(self, reservation: Reservation, seconds: float | None = None) -> bool:
        """Push the lease end `seconds` (default `retry_after`) from now; False if lost."""
        lease_end = milliseconds(self.clock.now() + (seconds or self.retry_after))
        with self._transaction(reservation.connection, "extend a lease on") as connection:
            changed = connection.execute(
                self._held(update(queue_jobs), reservation).values(
                    available_at=lease_end, reserved_until=lease_end
                )
            ).rowcount
        return changed == 1

    def acknowledge(self, reservation: Reservation) -> bool:
        """Delete the finished job's row; False if the lease had been lost."""
        with self._transaction(reservation.connection, "acknowledge on") as connection:
            return connection.execute(self._held(delete(queue_jobs), reservation)).rowcount == 1

    def bury(self, reservation: Reservation) -> bool:
        """Remove a job that failed for good (the runner has stored it already)."""
        return self.acknowledge(reservation)

    def release(
        self, reservation: Reservation, delay: float = 0.0, count_attempt: bool = True
    ) -> bool:
        """Put the job back, due after `delay` seconds.

        With `count_attempt=False` (the worker was stopped mid-job) the
        attempt it was reserved with is given back.
        """
        available_at = milliseconds(self.clock.now() + max(0.0, delay))
        values: dict[str, Any] = {
            "available_at": available_at,
            "reserved_until": None,
            "reserved_by": None,
        }
        if not count_attempt:
            values["attempts"] = queue_jobs.c.attempts - 1
        with self._transaction(reservation.connection, "release a job on") as connection:
            changed = connection.execute(
                self._held(update(queue_jobs), reservation).values(**values)
            ).rowcount
        return changed == 1

    @staticmethod
    def _held(statement: Any, reservation: Reservation) -> Any:
        return statement.where(
            queue_jobs.c.id == reservation.row_id, queue_jobs.c.reserved_by == reservation.token
        )

    def waiting(self, queues: Sequence[str], channel: str | None = None) -> bool:
        """Say whether `queues` hold a job no worker holds, due or delayed."""
        now = milliseconds(self.clock.now())
        query = (
            select(queue_jobs.c.id)
            .where(
                queue_jobs.c.queue.in_(list(queues)),
                queue_jobs.c.reserved_until.is_(None) | (queue_jobs.c.reserved_until <= now),
            )
            .limit(1)
        )
        with self._transaction(channel or self.connection, "look for jobs on") as connection:
            return connection.execute(query).first() is not None

    # Operators --------------------------------------------------------------------

    def counts(self, channel: str | None = None) -> list[QueueCounts]:
        """Return pending, delayed and reserved counts for every queue with jobs."""
        name = channel or self.connection
        now = milliseconds(self.clock.now())
        reserved = and_(queue_jobs.c.reserved_until.is_not(None), queue_jobs.c.reserved_until > now)
        due = queue_jobs.c.available_at <= now
        query = select(
            queue_jobs.c.queue,
            func.sum(_when(due, 1, 0)).label("pending"),
            func.sum(_when(and_(~due, queue_jobs.c.reserved_until.is_(None)), 1, 0)).label(
                "delayed"
            ),
            func.sum(_when(reserved, 1, 0)).label("reserved"),
            func.min(_when(due, queue_jobs.c.available_at, None)).label("oldest"),
        ).group_by(queue_jobs.c.queue)
        with self._transaction(name, "count jobs on") as connection:
            rows = connection.execute(query).all()
        return [
            QueueCounts(
                connection=name,
                queue=row.queue,
                pending=int(row.pending or 0),
                delayed=int(row.delayed or 0),
                reserved=int(row.reserved or 0),
                oldest_pending_age=(now - row.oldest) / 1000 if row.oldest is not None else None,
            )
            for row in sorted(rows, key=lambda row: row.queue)
        ]

    def clear(self, queue: str | None = None, channel: str | None = None) -> int:
        """Delete jobs that are not reserved (of `queue`, or all); return how many."""
        name = channel or self.connection
        now = milliseconds(self.clock.now())
        statement = delete(queue_jobs).where(
            (queue_jobs.c.reserved_until.is_(None)) | (queue_jobs.c.reserved_until <= now)
        )
        if queue is not None:
            statement = statement.where(queue_jobs.c.queue == queue)
        with self._transaction(name, "clear jobs on") as connection:
            return connection.execute(statement).rowcount

    def requeue(self, connection: Connection, envelope: Envelope) -> None:
        """Insert `envelope` as a fresh job inside the caller's transaction."""
        connection.execute(
            insert(queue_jobs),
            {
                "uuid": envelope.id,
                "queue": envelope.queue,
                "name": envelope.name[:255],
                "payload": envelope.body,
                "attempts": 0,
                "available_at": milliseconds(self.clock.now()),
                "created_at": dt.datetime.now(dt.UTC),
            },
        )

    def check(self, channel: str | None = None) -> None:
        """Raise `DatabaseUnavailableError` unless the connection works and has the table."""
        name = channel or self.connection
        with self._transaction(name, "use") as connection:
            if not inspect(connection).has_table(queue_jobs.name):
                raise DatabaseUnavailableError(_missing_table(name))

    # Connections ------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, name: str, action: str) -> Iterator[Connection]:
        """A transaction on connection `name`, with errors a person can act on."""
        engine = self.connections.engine(name)
        try:
            with engine.begin() as connection:
                yield connection
        except (OperationalError, ProgrammingError) as error:
            if _is_missing_table(engine, error):
                raise DatabaseUnavailableError(_missing_table(name)) from error
            if isinstance(error, OperationalError) or error.connection_invalidated:
                raise DatabaseUnavailableError(
                    f"cannot {action} database connection {name!r}: {_first_line(error)}"
                ) from error
            raise
        except DBAPIError as error:
            if error.connection_invalidated:
                raise DatabaseUnavailableError(
                    f"lost database connection {name!r}: {_first_line(error)}"
                ) from error
            raise


def _missing_table(name: str) -> str:
    return (
        f"table queue_jobs does not exist on connection {name!r}: "
        "run craft queue:table --jobs and craft migrate"
    )


def _is_missing_table(engine: Engine, error: DBAPIError) -> bool:
    text = str(error.orig).lower()
    return (
        any(
            marker in text
            for marker in ("no such table", "does not exist", "doesn't exist", "undefinedtable")
        )
        and "queue_jobs" in text
    )


def _first_line(error: DBAPIError) -> str:
    return str(error.orig).strip().splitlines()[0] if error.orig else str(error)


def _when(condition: Any, value: Any, otherwise: Any) -> Any:
    return case((condition, value), else_=otherwise)


def _iso(value: dt.datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return pendulum.instance(value).isoformat()
