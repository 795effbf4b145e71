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

Speed. A worker reserves and settles jobs on a DBAPI connection it keeps
(`Connections.kept`), with the SQL below written once per engine: on
PostgreSQL reserving is one `UPDATE ... RETURNING` and acknowledging one
`DELETE`, each committing on its own. With `prefetch` above 1 a reservation
takes up to that many due jobs at once under one lease; the ones not started
yet are given back when the worker stops, when the job in hand runs long
enough to need its lease extended, and before their lease could run out.

Attempts. An attempt is counted in the row before the job starts: the first
job of a reservation when it is reserved, each job reserved ahead of it when
the worker takes it up (on PostgreSQL in the same statement that settles the
job before it, so it costs no round trip). A job that kills its worker has
therefore spent its attempt, and the runner fails it instead of running it
once none are left; the jobs that only waited behind it in the dead worker's
batch spent nothing and run as usual once the lease runs out. An
idle worker on PostgreSQL sleeps on `LISTEN queue_jobs`, and every push of a
due job sends `NOTIFY`, so a job starts milliseconds after it is pushed; on
SQLite the worker watches `PRAGMA data_version`, which changes when another
connection commits; on MariaDB it polls every `--sleep` seconds. Idle
workers also wake when the next delayed job is due.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import select as selectors
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from sqlalchemy import and_, case, delete, func, insert, inspect, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from queueing.clock import Clock, SystemClock
from queueing.connections import Connections
from queueing.drivers.base import Driver, DriverUnavailableError, QueueCounts
from queueing.failed import DatabaseFailedJobStore, FailedJob
from queueing.payload import Envelope
from queueing.schema import MissingTableError, queue_jobs

T = TypeVar("T")

# Due jobs a worker reserves at once under one lease.
DEFAULT_PREFETCH = 10
# The channel pushes NOTIFY on PostgreSQL, with the queue name as payload.
NOTIFY_CHANNEL = "queue_jobs"
# A transaction the server rolled back for a lock conflict runs again, this
# many times in all, after a pause growing by this much each time.
CONFLICT_ATTEMPTS = 5
CONFLICT_PAUSE_SECONDS = 0.01
# How often an idle SQLite worker looks whether another connection committed.
SQLITE_WATCH_SECONDS = 0.02
# Slices an idle wait is cut into, so a stopping worker is never kept waiting.
WAIT_SLICE_SECONDS = 0.1

# The worker's statements; `{name}` becomes the engine's placeholder for that parameter.
# Reserving leases the whole batch and counts an attempt only for its first
# job, the one that starts now; `START` counts each of the others as it starts.
RESERVE_RETURNING = """
WITH picked AS (
    SELECT id, available_at AS due FROM queue_jobs
    WHERE queue = {queue} AND available_at <= {now}
    ORDER BY available_at, id LIMIT {limit} FOR UPDATE SKIP LOCKED
), first AS (SELECT id FROM picked ORDER BY due, id LIMIT 1)
UPDATE queue_jobs AS job
SET attempts = job.attempts + CASE WHEN job.id IN (SELECT id FROM first) THEN 1 ELSE 0 END,
    available_at = {lease_end}, reserved_until = {lease_end}, reserved_by = {token}
FROM picked WHERE job.id = picked.id
RETURNING job.id, job.uuid, job.name, job.payload, job.attempts, job.created_at, picked.due
"""
RESERVE_SELECT = """
SELECT id, uuid, name, payload, attempts, created_at, available_at FROM queue_jobs
WHERE queue = {queue} AND available_at <= {now}
ORDER BY available_at, id LIMIT {limit}
"""
RESERVE_UPDATE = """
UPDATE queue_jobs
SET attempts = attempts + CASE WHEN id = {first} THEN 1 ELSE 0 END,
    available_at = {lease_end}, reserved_until = {lease_end}, reserved_by = {token}
WHERE id IN ({id})
"""
START = """
UPDATE queue_jobs SET attempts = attempts + 1 WHERE id = {next} AND reserved_by = {next_token}
"""
ACKNOWLEDGE = "DELETE FROM queue_jobs WHERE id = {id} AND reserved_by = {token}"
RELEASE = """
UPDATE queue_jobs
SET available_at = {available_at}, reserved_until = NULL, reserved_by = NULL,
    attempts = attempts - {given_back}
WHERE id = {id} AND reserved_by = {token}
"""
EXTEND = """
UPDATE queue_jobs SET available_at = {lease_end}, reserved_until = {lease_end}
WHERE id = {id} AND reserved_by = {token}
"""
NEXT_DUE = "SELECT MIN(available_at) FROM queue_jobs WHERE queue IN ({queue})"


class DatabaseUnavailableError(DriverUnavailableError):
    """The database cannot be reached, or lacks the `queue_jobs` table."""


class QueueTableMissingError(DatabaseUnavailableError, MissingTableError):
    """The connection works but has no `queue_jobs` table."""


class PushTooLargeError(DatabaseUnavailableError):
    """MySQL/MariaDB refused a push larger than its `max_allowed_packet`; nothing was queued."""

    retryable = False


@dataclass(frozen=True)
class Reservation:
    """A job this worker holds: its envelope, its row and the lease token."""

    envelope: Envelope
    row_id: int
    token: str
    connection: str
    # Epoch seconds when the lease taken at reservation runs out.
    leased_until: float
    # Whether the row counts the attempt about to run; one reserved ahead of
    # the job in hand counts it only when the worker takes it up.
    started: bool = True


def milliseconds(seconds: float) -> int:
    """Return epoch seconds as integer milliseconds."""
    return round(seconds * 1000)


class DatabaseDriver(Driver):
    """Stores jobs in `queue_jobs` and hands them out under a lease."""

    name = "database"
    # Reservations expire: the worker extends the lease of every job in hand.
    leases = True

    def __init__(
        self,
        connections: Connections,
        connection: str | None = None,
        queue: str = "default",
        retry_after: float = 90.0,
        prefetch: int = DEFAULT_PREFETCH,
        clock: Clock | None = None,
    ) -> None:
        if retry_after <= 0:
            raise ValueError(f"database driver: retry_after must be positive, not {retry_after!r}")
        if int(prefetch) < 1:
            raise ValueError(f"database driver: prefetch must be at least 1, not {prefetch!r}")
        self.connections = connections
        self.connection = connection or connections.default
        self.default_queue = queue
        self.retry_after = float(retry_after)
        self.prefetch = int(prefetch)
        self.clock = clock or SystemClock()
        # Jobs reserved ahead of the one in hand, in the order they are due.
        self._ahead: deque[Reservation] = deque()
        self._lock = threading.Lock()
        # Held while a job reserved ahead has its start counted or is given back.
        self._starting = threading.RLock()
        self._statements: dict[tuple[str, str], str] = {}
        self._listening: set[str] = set()

    def queue_for(self, channel: str | None, queue: str | None) -> str:
        """The channel names a connection here, so only `queue` picks the queue."""
        return queue or self.default_queue

    # Pushing ----------------------------------------------------------------------

    def push(self, envelopes: Sequence[Envelope], channel: str | None = None) -> None:
        """Insert every envelope in one transaction, and wake PostgreSQL workers."""
        name = channel or self.connection
        created_at = dt.datetime.now(dt.UTC)
        due_by = milliseconds(self.clock.now())
        rows = [
            self._row(envelope, envelope.attempts, envelope.available_at, created_at)
            for envelope in envelopes
        ]

        def insert_rows() -> None:
            with self._transaction(name, "push to") as connection:
                connection.execute(insert(queue_jobs), rows)
                if connection.dialect.name == "postgresql":
                    for queue in sorted(
                        {row["queue"] for row in rows if row["available_at"] <= due_by}
                    ):
                        connection.execute(
                            text("SELECT pg_notify(:channel, :queue)"),
                            {"channel": NOTIFY_CHANNEL, "queue": queue},
                        )

        try:
            _again_on_conflict(insert_rows)
        except DatabaseUnavailableError as error:
            self._raise_if_too_large(name, rows, error)
            raise

    def _raise_if_too_large(
        self, name: str, rows: Sequence[dict[str, Any]], error: DatabaseUnavailableError
    ) -> None:
        """Name `max_allowed_packet` when that is why MySQL/MariaDB dropped a push.

        The server then closes the connection ("server has gone away"), which
        reads like an outage; asking for the limit afterwards tells them apart.
        """
        engine = self.connections.engine(name)
        if engine.dialect.name not in ("mysql", "mariadb"):
            return
        size = sum(len(row["payload"]) for row in rows)
        try:
            with engine.connect() as connection:
                limit = int(connection.execute(text("SELECT @@max_allowed_packet")).scalar_one())
        except Exception:
            return
        if size >= limit:
            raise PushTooLargeError(
                f"cannot push to database connection {name!r}: the job(s) take {size:,} bytes, "
                f"more than the server's max_allowed_packet of {limit:,} bytes; nothing was "
                "queued (raise max_allowed_packet, or pass a reference to the data instead)"
            ) from error

    @staticmethod
    def _row(
        envelope: Envelope, attempts: int, available_at: float, created_at: dt.datetime
    ) -> dict[str, Any]:
        return {
            "uuid": envelope.id,
            "queue": envelope.queue,
            "name": envelope.name[:255],
            "payload": envelope.body,
            "attempts": attempts,
            "available_at": milliseconds(available_at),
            "reserved_until": None,
            "reserved_by": None,
            "created_at": created_at,
        }

    # Working ----------------------------------------------------------------------

    def reserve(self, queues: Sequence[str], channel: str | None = None) -> Reservation | None:
        """Take the first due job of the first queue in `queues` that has one.

        A job reserved ahead (`prefetch`) is handed out first, as long as it
        belongs to `queues` and keeps at least half of its lease.
        """
        name = channel or self.connection
        ahead = self._take_ahead(queues, name)
        if ahead is not None:
            return ahead
        for queue in queues:
            reserved = self._reserve_from(name, queue)
            if reserved:
                first, *rest = reserved
                with self._lock:
                    self._ahead.extend(rest)
                return first
        return None

    def _take_ahead(self, queues: Sequence[str], name: str) -> Reservation | None:
        """Hand out the next job reserved ahead, its attempt counted; None if there is none."""
        while True:
            with self._lock:
                if not self._ahead:
                    return None
                first = self._ahead[0]
                if not (self._fresh(first) and first.connection == name):
                    break
                if first.envelope.queue not in queues:
                    break
                self._ahead.popleft()
            if first.started or self._start(first):
                return replace(first, started=True)
            # Its lease was lost meanwhile: another worker may hold it now.
        self.release_unstarted()
        return None

    def _fresh(self, reservation: Reservation) -> bool:
        """Whether a job reserved ahead keeps at least half of its lease."""
        return reservation.leased_until - self.clock.now() >= self.retry_after / 2

    def _start(self, reservation: Reservation) -> bool:
        """Count the attempt of a job reserved ahead before it runs; False if its lease is gone."""
        values = {"next": reservation.row_id, "next_token": reservation.token}
        return self._settle(reservation, "start a job on", START, values, start_next=False)

    def _reserve_from(self, name: str, queue: str) -> list[Reservation]:
        now = milliseconds(self.clock.now())
        lease_end = now + milliseconds(self.retry_after)
        values: dict[str, Any] = {
            "queue": queue,
            "now": now,
            "limit": self.prefetch,
            "lease_end": lease_end,
            "token": f"{_holder(os.getpid())}{uuid.uuid4().hex}",
        }

        def reserve(cursor: Any, dialect: str) -> list[tuple[Any, ...]]:
            """The reserved rows in the order they run, with their attempts before this one."""
            if dialect == "postgresql":
                cursor.execute(self._sql(dialect, RESERVE_RETURNING), values)
                found = sorted(cursor.fetchall(), key=lambda row: (row[6], row[0]))
                if found:
                    # The statement has counted the first job's attempt already.
                    first = found[0]
                    found[0] = (*first[:4], first[4] - 1, *first[5:])
                return found
            locking = "" if dialect == "sqlite" else " FOR UPDATE SKIP LOCKED"
            with _transaction_on(cursor, dialect):
                cursor.execute(self._sql(dialect, RESERVE_SELECT) + locking, values)
                found = cursor.fetchall()
                if found:
                    update, ids = _in_list(RESERVE_UPDATE, "id", [row[0] for row in found])
                    cursor.execute(
                        self._sql(dialect, update), {**values, **ids, "first": found[0][0]}
                    )
            return found

        rows = self._on_kept(name, "reserve from", reserve)
        leased_until = lease_end / 1000
        return [
            Reservation(
                Envelope(
                    id=row[1],
                    name=row[2],
                    queue=queue,
                    driver=self.name,
                    created=_iso(row[5]),
                    available_at=now / 1000,
                    body=bytes(row[3]),
                    attempts=int(row[4]) + 1,
                    connection=name,
                ),
                int(row[0]),
                values["token"],
                name,
                leased_until,
                started=index == 0,
            )
            for index, row in enumerate(rows)
        ]

    @property
    def extend_every(self) -> float:
        """How often the worker extends the lease of a job in hand: a third of it."""
        return max(0.5, self.retry_after / 3)

    def extend(self, reservation: Reservation, seconds: float | None = None) -> bool:
        """Push the lease end `seconds` (default `retry_after`) from now; False if lost.

        A job that needs its lease extended runs long, so the jobs reserved
        ahead of it are given back for other workers to take.
        """
        self.release_unstarted()
        lease_end = milliseconds(self.clock.now() + (seconds or self.retry_after))
        return self._settle(
            reservation, "extend a lease on", EXTEND, {"lease_end": lease_end}, start_next=False
        )

    def acknowledge(self, reservation: Reservation) -> bool:
        """Delete the finished job's row; False if the lease had been lost."""
        return self._settle(reservation, "acknowledge on", ACKNOWLEDGE, {})

    def bury(self, reservation: Reservation) -> bool:
        """Remove a job that failed for good (the runner has stored it already)."""
        return self.acknowledge(reservation)

    def shares_transaction_with(self, reservation: Reservation, store: Any) -> bool:
        """Whether `store` keeps failures in the database holding `reservation`'s row."""
        if not isinstance(store, DatabaseFailedJobStore):
            return False
        return store.engine.url == self.connections.engine(reservation.connection).url

    def bury_stored(
        self, reservation: Reservation, failure: FailedJob, store: DatabaseFailedJobStore
    ) -> bool:
        """Store `failure` and remove the job's row in one transaction; False if the lease was lost.

        A crash at any moment leaves either the job (run again, or settled as
        a copy of its stored failure) or its record, never both, never two.
        """
        removed: list[bool] = []

        def remove(connection: Connection) -> None:
            deleted = connection.execute(
                delete(queue_jobs).where(
                    queue_jobs.c.id == reservation.row_id,
                    queue_jobs.c.reserved_by == reservation.token,
                )
            )
            removed.append(deleted.rowcount == 1)

        try:
            store.store(failure, then=remove)
        except (OperationalError, DBAPIError) as error:
            raise DatabaseUnavailableError(
                f"cannot store a failed job on database connection {reservation.connection!r}: "
                f"{_first_line(error)}"
            ) from error
        return bool(removed) and removed[-1]

    def release(
        self, reservation: Reservation, delay: float = 0.0, count_attempt: bool = True
    ) -> bool:
        """Put the job back, due after `delay` seconds.

        With `count_attempt=False` (the worker was stopped mid-job) the
        attempt it was reserved with is given back.
        """
        values = {
            "available_at": milliseconds(self.clock.now() + max(0.0, delay)),
            "given_back": 1 if reservation.started and not count_attempt else 0,
        }
        return self._settle(reservation, "release a job on", RELEASE, values)

    def release_unstarted(self) -> int:
        """Give back the jobs reserved ahead that no attempt started; return how many."""
        # Never in the middle of a settlement that counts the next job's start
        # (the lease keeper's thread calls this while the worker settles).
        with self._starting:
            with self._lock:
                ahead, self._ahead = list(self._ahead), deque()
            given_back = 0
            for reservation in ahead:
                try:
                    given_back += self.release(reservation, 0.0, count_attempt=False)
                except DriverUnavailableError:
                    # Its lease runs out and it is due again, its attempts as they were.
                    continue
            return given_back

    def _settle(
        self,
        reservation: Reservation,
        action: str,
        statement: str,
        values: dict[str, Any],
        start_next: bool = True,
    ) -> bool:
        """Run `statement` on the reserved row; True when this lease still held it.

        With `start_next`, the job reserved ahead that the worker takes up
        next has its attempt counted in the same round trip (one statement
        on PostgreSQL, one transaction on SQLite).
        """
        held = {"id": reservation.row_id, "token": reservation.token, **values}
        upcoming = self._upcoming() if start_next else None

        def settle(cursor: Any, dialect: str) -> tuple[bool, bool]:
            if upcoming is None:
                # One statement commits by itself, except on SQLite, where it must
                # take the write lock up front to not fail on a stale snapshot.
                alone = dialect != "sqlite"
                with contextlib.nullcontext() if alone else _transaction_on(cursor, dialect):
                    cursor.execute(self._sql(dialect, statement), held)
                    return cursor.rowcount == 1, False
            start = {"next": upcoming.row_id, "next_token": upcoming.token}
            if dialect == "postgresql":
                cursor.execute(self._sql(dialect, _with_start(statement)), {**held, **start})
                settled, started = cursor.fetchone()
                return settled == 1, started == 1
            with _transaction_on(cursor, dialect):
                # The start first: a crash between the two can rerun a finished
                # job, but never runs one whose attempt was not counted.
                cursor.execute(self._sql(dialect, START), start)
                started = cursor.rowcount == 1
                cursor.execute(self._sql(dialect, statement), held)
                return cursor.rowcount == 1, started

        if upcoming is None:
            return self._on_kept(reservation.connection, action, settle)[0]
        with self._starting:
            if self._upcoming() is not upcoming:
                upcoming = None  # given back meanwhile: settle the job alone
            settled, started = self._on_kept(reservation.connection, action, settle)
            if upcoming is not None and started:
                self._mark_started(upcoming)
            return settled

    def _upcoming(self) -> Reservation | None:
        """The job reserved ahead that the worker takes next, if it is fresh and not counted."""
        with self._lock:
            if not self._ahead:
                return None
            first = self._ahead[0]
        return first if not first.started and self._fresh(first) else None

    def _mark_started(self, reservation: Reservation) -> None:
        with self._lock:
            if self._ahead and self._ahead[0] is reservation:
                self._ahead[0] = replace(reservation, started=True)

    def release_held_by(self, pid: int, channel: str | None = None) -> int:
        """Give back at once every job that worker process `pid` of this host held.

        For a supervisor that saw the process die: its jobs become due now
        rather than when their lease runs out. The attempts they counted stay
        counted, so the job that killed the process has spent one.
        """
        name = channel or self.connection
        statement = (
            update(queue_jobs)
            .where(queue_jobs.c.reserved_by.startswith(_holder(pid), autoescape=True))
            .values(
                available_at=milliseconds(self.clock.now()),
                reserved_until=None,
                reserved_by=None,
            )
        )
        with self._transaction(name, "give back the jobs of a dead worker on") as connection:
            return connection.execute(statement).rowcount

    def wait_for_jobs(
        self,
        queues: Sequence[str],
        channel: str | None,
        timeout: float,
        wake: threading.Event,
    ) -> None:
        """Block until a job may be due, `timeout` passes or `wake` is set.

        The wait ends early when the next delayed job of `queues` is due, and
        on PostgreSQL when a push sends NOTIFY for one of `queues`; on SQLite
        when another connection commits.
        """
        name = channel or self.connection
        dialect = self.connections.engine(name).dialect.name
        # Watching starts before the look at the table, so a push in between still wakes us.
        if dialect == "postgresql":
            self._listen(name)
        elif dialect == "sqlite":
            seen = self._data_version(name)
        deadline = time.monotonic() + timeout
        due_in = self._next_due_in(name, queues)
        if due_in is not None:
            deadline = min(deadline, time.monotonic() + due_in)
        if dialect == "postgresql":
            self._wait_for_notify(name, queues, deadline, wake)
            return

        def moved(remaining: float) -> bool:
            if dialect != "sqlite":
                wake.wait(min(remaining, WAIT_SLICE_SECONDS))
                return False
            wake.wait(min(remaining, SQLITE_WATCH_SECONDS))
            return self._data_version(name) != seen

        _wait_until(deadline, wake, moved)

    def _next_due_in(self, name: str, queues: Sequence[str]) -> float | None:
        """Seconds until the next job of `queues` is due, or None when they hold none."""
        query, names = _in_list(NEXT_DUE, "queue", list(queues))

        def next_due(cursor: Any, dialect: str) -> Any:
            cursor.execute(self._sql(dialect, query), names)
            return cursor.fetchone()[0]

        due = self._on_kept(name, "look for jobs on", next_due)
        return None if due is None else max(0.0, int(due) / 1000 - self.clock.now())

    def _listen(self, name: str) -> None:
        if name in self._listening:
            return
        try:
            self.connections.kept(name, role="listen").execute(f"LISTEN {NOTIFY_CHANNEL}")
        except Exception as error:
            self._lost_listener(name, error)
        self._listening.add(name)

    def _wait_for_notify(
        self, name: str, queues: Sequence[str], deadline: float, wake: threading.Event
    ) -> None:
        listener = self.connections.kept(name, role="listen")

        def notified(remaining: float) -> bool:
            ready, _, _ = selectors.select(
                [listener.fileno()], [], [], min(remaining, WAIT_SLICE_SECONDS)
            )
            return bool(ready) and any(
                notice.payload in queues for notice in listener.notifies(timeout=0)
            )

        try:
            _wait_until(deadline, wake, notified)
        except Exception as error:
            self._lost_listener(name, error)

    def _lost_listener(self, name: str, error: Exception) -> None:
        self._listening.discard(name)
        self.connections.discard(name, role="listen")
        raise DatabaseUnavailableError(
            f"lost the LISTEN connection to database {name!r}: {_first_line(error)}"
        ) from error

    def _data_version(self, name: str) -> int:
        """SQLite's counter that moves whenever another connection commits."""

        def version(cursor: Any, dialect: str) -> int:
            cursor.execute("PRAGMA data_version")
            return int(cursor.fetchone()[0])

        return self._on_kept(name, "watch", version)

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
        with self._lock:
            if self._ahead:
                return True
        with self._transaction(channel or self.connection, "look for jobs on") as connection:
            return connection.execute(query).first() is not None

    def close(self) -> None:
        """Give back the jobs reserved ahead; the connections close with `Connections`."""
        with contextlib.suppress(Exception):
            self.release_unstarted()

    # The kept connection ----------------------------------------------------------

    def _sql(self, dialect: str, statement: str) -> str:
        """`statement` with `{name}` placeholders in the engine's parameter style."""
        key = (dialect, statement)
        sql = self._statements.get(key)
        if sql is None:
            style = "%({})s" if dialect != "sqlite" else ":{}"
            sql = _PLACEHOLDER.sub(lambda match: style.format(match.group(1)), statement)
            self._statements[key] = sql
        return sql

    def _on_kept(self, name: str, action: str, work: Callable[[Any, str], T]) -> T:
        """Run `work(cursor, dialect)` on this thread's kept connection to `name`.

        A connection error closes the kept connection (the next call opens a
        new one) and becomes `DatabaseUnavailableError`, as a missing table does.
        A deadlock (the server rolled the transaction back) runs `work` again.
        """
        engine = self.connections.engine(name)
        dbapi = engine.dialect.loaded_dbapi

        def run() -> T:
            connection = self.connections.kept(name, setup=_worker_session)
            cursor = connection.cursor()
            try:
                return work(cursor, engine.dialect.name)
            finally:
                with contextlib.suppress(dbapi.Error):
                    cursor.close()

        try:
            return _again_on_conflict(run)
        except dbapi.Error as error:
            message = _first_line(error)
            if _mentions_missing_table(message):
                raise QueueTableMissingError("queue_jobs", name) from error
            if isinstance(error, dbapi.OperationalError | dbapi.InterfaceError):
                self.connections.discard(name)
                raise DatabaseUnavailableError(
                    f"cannot {action} database connection {name!r}: {message}"
                ) from error
            raise

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

    def clear_question(self, queue: str | None = None, channel: str | None = None) -> str:
        """The question an operator confirms before `clear` with these arguments."""
        what = f"queue {queue!r}" if queue else "every queue"
        return f"Delete the pending jobs of {what} on {self.name}?"

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
        row = self._row(envelope, 0, self.clock.now(), dt.datetime.now(dt.UTC))
        connection.execute(insert(queue_jobs), row)

    def check(self, channel: str | None = None) -> None:
        """Raise `DatabaseUnavailableError` unless the connection works and has the table."""
        name = channel or self.connection
        with self._transaction(name, "use") as connection:
            if not inspect(connection).has_table(queue_jobs.name):
                raise QueueTableMissingError("queue_jobs", name)

    # Connections ------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, name: str, action: str) -> Iterator[Connection]:
        """A transaction on connection `name`, with errors a person can act on."""
        engine = self.connections.engine(name)
        try:
            with engine.begin() as connection:
                yield connection
        except (OperationalError, ProgrammingError) as error:
            if _mentions_missing_table(str(error.orig)):
                raise QueueTableMissingError("queue_jobs", name) from error
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


_HOST = socket.gethostname()[:160]


def _holder(pid: int) -> str:
    """How a lease token begins for worker process `pid` of this host: `host:pid:`."""
    return f"{_HOST}:{pid}:"


def _with_start(statement: str) -> str:
    """PostgreSQL: `statement` and `START` in one round trip, each saying whether it hit its row."""
    return (
        f"WITH settled AS ({statement.strip()} RETURNING 1), "
        f"started AS ({START.strip()} RETURNING 1) "
        "SELECT (SELECT count(*) FROM settled), (SELECT count(*) FROM started)"
    )


def _mentions_missing_table(message: str) -> bool:
    lowered = message.lower()
    return (
        any(
            marker in lowered
            for marker in ("no such table", "does not exist", "doesn't exist", "undefinedtable")
        )
        and "queue_jobs" in lowered
    )


def _wait_until(deadline: float, wake: threading.Event, step: Callable[[float], bool]) -> None:
    """Run `step(seconds left)` until it ends the wait, `deadline` passes or `wake` is set."""
    while not wake.is_set() and (remaining := deadline - time.monotonic()) > 0:
        if step(remaining):
            return


@contextlib.contextmanager
def _transaction_on(cursor: Any, dialect: str) -> Iterator[None]:
    """A transaction on a kept (autocommit) connection; SQLite takes its write lock at once."""
    cursor.execute("BEGIN IMMEDIATE" if dialect == "sqlite" else "BEGIN")
    try:
        yield
        cursor.execute("COMMIT")
    except BaseException:
        # The statement that failed may have ended the transaction already.
        with contextlib.suppress(Exception):
            cursor.execute("ROLLBACK")
        raise


def _in_list(statement: str, slot: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """`statement` with `{slot}` made one placeholder per value, and those values by name."""
    named = {f"{slot}{index}": value for index, value in enumerate(values)}
    placeholders = ", ".join("{" + name + "}" for name in named)
    return statement.replace("{" + slot + "}", placeholders), named


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _again_on_conflict(run: Callable[[], T]) -> T:
    """Run the transaction `run` once more, up to `CONFLICT_ATTEMPTS` in all, after a conflict.

    The server rolled the whole transaction back, so running it again is safe.
    """
    for attempt in range(1, CONFLICT_ATTEMPTS):
        try:
            return run()
        except Exception as error:
            if not _is_conflict(error):
                raise
            time.sleep(CONFLICT_PAUSE_SECONDS * attempt)
    return run()


def _is_conflict(error: BaseException | None) -> bool:
    """Say whether the server rolled a transaction back for a lock conflict.

    InnoDB deadlocks and lock wait timeouts (MariaDB/MySQL 1213, 1205) and
    PostgreSQL deadlocks and serialization failures (40P01, 40001): the
    transaction is gone, and running it again is the documented remedy.
    Errors are looked at under our `DatabaseUnavailableError` and
    SQLAlchemy's wrapper, down to the driver's own.
    """
    if isinstance(error, DatabaseUnavailableError):
        error = error.__cause__
    original = getattr(error, "orig", None) or error
    if original is None:
        return False
    if getattr(original, "sqlstate", None) in ("40P01", "40001"):
        return True
    arguments: tuple[Any, ...] = tuple(getattr(original, "args", ()))
    return bool(arguments) and arguments[0] in (1213, 1205)


def _worker_session(connection: Any, dialect: str) -> None:
    """Set up a worker's kept connection (reserve, settle, idle checks).

    On PostgreSQL its commits do not wait for the WAL to reach disk
    (`synchronous_commit = off`). Nothing pushed is at stake, since pushes
    commit on other connections: a server crash can only forget the last
    fraction of a second of reservations and acknowledgements, and then the
    jobs run again once their lease is over (at least once, never lost).
    """
    if dialect == "postgresql":
        cursor = connection.cursor()
        try:
            cursor.execute("SET synchronous_commit TO off")
        finally:
            cursor.close()


def _first_line(error: BaseException) -> str:
    """The first line of a database error, unwrapped from SQLAlchemy's `DBAPIError` if need be."""
    source = getattr(error, "orig", None) or error
    text = str(source).strip()
    return text.splitlines()[0] if text else type(source).__name__


def _when(condition: Any, value: Any, otherwise: Any) -> Any:
    return case((condition, value), else_=otherwise)


def _iso(value: dt.datetime | str | None) -> str:
    """`created_at` as ISO-8601 with offset; SQLite hands back the text SQLAlchemy wrote."""
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    else:
        moment = value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.isoformat()
