"""Failed jobs: the record of a job that used up its attempts, and where it goes."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import socket
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import delete, insert, inspect, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from queueing.connections import Connections
from queueing.payload import Envelope
from queueing.schema import MissingTableError, failed_jobs

logger = logging.getLogger("queueing.failed")


@dataclass(frozen=True)
class FailedJob:
    """A job that failed for good, or a payload that was refused.

    `reason` is `failed` (the job raised on its last attempt), `died` (its
    worker died during every attempt it had), `signature` (the body was not
    signed with our key) or `corrupt` (the bytes are not a payload of ours).
    The envelope still holds the raw signed body, so a stored job can be
    re-queued, and a refused one inspected, unchanged.
    """

    envelope: Envelope
    reason: str
    exception_type: str
    message: str
    traceback: str
    failed_at: float
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    @classmethod
    def from_error(
        cls, envelope: Envelope, error: BaseException, failed_at: float, reason: str = "failed"
    ) -> FailedJob:
        """Build the record for `envelope` from the exception that ended it."""
        return cls(
            envelope=envelope,
            reason=reason,
            exception_type=type(error).__name__,
            message=str(error),
            traceback="".join(traceback.format_exception(error)),
            failed_at=failed_at,
        )


class FailedJobStore(Protocol):
    """Keeps failed jobs so an operator can inspect and retry them."""

    def store(self, failure: FailedJob) -> Any:
        """Record `failure`."""
        ...


class LoggingFailedJobStore:
    """The store used when no `failed_jobs` table is configured: it logs, loudly."""

    def store(self, failure: FailedJob) -> None:
        """Log the failure with everything needed to find it again."""
        envelope = failure.envelope
        logger.error(
            "job %s (%s) on queue %r %s after %d attempt(s): %s: %s\n%s"
            "It is not stored: no failed_jobs table is configured "
            "(run `craft queue:table --failed` and `craft migrate` to keep failed jobs).",
            envelope.id,
            envelope.name,
            envelope.queue,
            _outcome(failure.reason),
            envelope.attempts,
            failure.exception_type,
            failure.message,
            failure.traceback,
        )


def _outcome(reason: str) -> str:
    if reason == "failed":
        return "failed"
    if reason == "died":
        return "killed its worker on every attempt"
    return f"was refused ({reason})"


@dataclass(frozen=True)
class StoredFailure:
    """One row of `failed_jobs`, as the operator commands show it."""

    id: int
    uuid: str
    driver: str
    connection: str | None
    queue: str
    name: str
    reason: str
    exception_type: str
    message: str
    traceback: str
    attempts: int
    created: str
    host: str
    pid: int
    failed_at: dt.datetime
    payload: bytes = field(repr=False)

    def envelope(self, now: float) -> Envelope:
        """Return the job as a fresh envelope, due `now`, with no attempts spent."""
        return Envelope(
            id=self.uuid,
            name=self.name,
            queue=self.queue,
            driver=self.driver,
            created=self.created,
            available_at=now,
            body=self.payload,
            attempts=0,
        )

    def summary(self) -> dict[str, object]:
        """Return the row without its payload and traceback, JSON-friendly."""
        return {
            "id": self.id,
            "uuid": self.uuid,
            "job": self.name,
            "queue": self.queue,
            "driver": self.driver,
            "connection": self.connection,
            "reason": self.reason,
            "exception": f"{self.exception_type}: {self.message}".strip(),
            "attempts": self.attempts,
            "failed_at": _aware(self.failed_at).isoformat(),
        }


Requeue = Callable[[Connection, StoredFailure], None]


class FailedJobBusyError(RuntimeError):
    """Another process retried or replaced the failed job at the same moment."""


class FailedTableMissingError(MissingTableError):
    """The `failed_jobs` table does not exist on the configured connection."""


class DatabaseFailedJobStore:
    """Keeps failed jobs in the `failed_jobs` table of one connection.

    While the table does not exist, failures go to `fallback` (the log) with a
    hint; once `craft migrate` creates it, they are stored, with no restart.
    """

    def __init__(
        self,
        connections: Connections,
        connection: str | None = None,
        fallback: FailedJobStore | None = None,
    ) -> None:
        self.connections = connections
        self.connection = connection or connections.default
        self.fallback = fallback or LoggingFailedJobStore()

    @property
    def engine(self) -> Engine:
        """The engine of the connection holding `failed_jobs`."""
        return self.connections.engine(self.connection)

    def available(self) -> bool:
        """Say whether the `failed_jobs` table exists."""
        with self.engine.connect() as connection:
            return inspect(connection).has_table(failed_jobs.name)

    def store(self, failure: FailedJob, then: Callable[[Connection], None] | None = None) -> bool:
        """Insert `failure` unless this job's failure is stored already; say whether it was.

        Keyed by the job id, so a job delivered again after its failure was
        stored (its worker died before removing it) never gets a second
        record. A row being retried (`RETRYING`) is replaced by the new
        failure. `then` runs in the same transaction (the database driver
        removes the job there), so the record and the removal commit
        together. Without the table, the failure is logged instead.
        """
        envelope = failure.envelope
        uuid, message = _fitting_id(envelope.id, failure.message)
        row = {
            "uuid": uuid,
            "driver": envelope.driver[:32],
            "connection": envelope.connection[:64]
            if envelope.driver == "database" and envelope.connection
            else None,
            "queue": envelope.queue[:191],
            "name": envelope.name[:255],
            "payload": envelope.body,
            "reason": failure.reason,
            "exception_type": failure.exception_type[:255],
            "message": message,
            "traceback": failure.traceback,
            "attempts": envelope.attempts,
            "created": envelope.created[:64],
            "host": failure.host[:255],
            "pid": failure.pid,
            "failed_at": dt.datetime.fromtimestamp(failure.failed_at, dt.UTC),
        }
        try:
            with self.engine.begin() as connection:
                stored = self._insert_once(connection, row)
                if then is not None:
                    then(connection)
                return stored
        except IntegrityError:
            # Another process stored this job's failure at the same moment.
            if then is not None:
                with self.engine.begin() as connection:
                    then(connection)
            return False
        except (OperationalError, ProgrammingError) as error:
            if self.available():
                raise
            logger.warning("failed_jobs does not exist on %r (%s)", self.connection, error.orig)
            self.fallback.store(failure)
            if then is not None:
                with self.engine.begin() as connection:
                    then(connection)
            return True

    @staticmethod
    def _insert_once(connection: Connection, row: dict[str, Any]) -> bool:
        existing = connection.execute(
            select(failed_jobs.c.reason).where(failed_jobs.c.uuid == row["uuid"])
        ).first()
        if existing is not None and existing.reason != RETRYING:
            return False
        if existing is not None:
            connection.execute(delete(failed_jobs).where(failed_jobs.c.uuid == row["uuid"]))
        connection.execute(insert(failed_jobs), row)
        return True

    def has_failure(self, job_id: str) -> bool:
        """Whether a failure of job `job_id` is stored (and not being retried)."""
        uuid, _ = _fitting_id(job_id, "")
        query = select(failed_jobs.c.id).where(
            failed_jobs.c.uuid == uuid, failed_jobs.c.reason != RETRYING
        )
        try:
            with self.engine.begin() as connection:
                return connection.execute(query).first() is not None
        except (OperationalError, ProgrammingError):
            if self.available():
                raise
            return False

    def all(
        self,
        queue: str | None = None,
        name: str | None = None,
        since: dt.datetime | None = None,
        driver: str | None = None,
    ) -> list[StoredFailure]:
        """Return stored failures, oldest first, filtered by queue, job name, time or driver."""
        query = select(failed_jobs).order_by(failed_jobs.c.id)
        if queue:
            query = query.where(failed_jobs.c.queue == queue)
        if name:
            named = failed_jobs.c.name
            query = query.where((named == name) | named.like(f"%.{name}") | named.like(f"%:{name}"))
        if since:
            query = query.where(failed_jobs.c.failed_at >= _naive_if_needed(self.engine, since))
        if driver:
            query = query.where(failed_jobs.c.driver == driver)
        with self._reading() as connection:
            return [_stored(row) for row in connection.execute(query)]

    def find(self, identifier: int | str) -> StoredFailure | None:
        """Return the failure with this row id or job uuid, or None."""
        with self._reading() as connection:
            row = connection.execute(select(failed_jobs).where(_matching(identifier))).first()
        return _stored(row) if row is not None else None

    def forget(self, identifier: int | str) -> bool:
        """Delete one failure; say whether it existed."""
        with self._writing() as connection:
            return connection.execute(delete(failed_jobs).where(_matching(identifier))).rowcount > 0

    def flush(self) -> int:
        """Delete every failure; return how many."""
        with self._writing() as connection:
            return connection.execute(delete(failed_jobs)).rowcount

    def retry(self, identifier: int | str, requeue: Requeue) -> StoredFailure | None:
        """Hand one failure to `requeue`, and delete it in the same transaction.

        `requeue` gets this transaction's connection, so a job going back to a
        `queue_jobs` table on the same database is inserted atomically with
        the delete; a crash between the two never loses it. `requeue` must
        only write through that connection, never run the job: the row stays
        locked until it returns. Returns the failure, or None when there is
        no such row.
        """
        with self._writing() as connection:
            query = select(failed_jobs).where(_matching(identifier))
            if connection.dialect.name != "sqlite":
                query = query.with_for_update()
            row = connection.execute(query).first()
            if row is None:
                return None
            failure = _stored(row)
            requeue(connection, failure)
            connection.execute(delete(failed_jobs).where(failed_jobs.c.id == failure.id))
        return failure

    def retry_elsewhere(
        self, identifier: int | str, push: Callable[[StoredFailure], None]
    ) -> StoredFailure | None:
        """Hand one failure to `push` outside any transaction, then delete its row.

        For queues the failed store cannot share a transaction with (another
        database, a broker, a driver that runs the job at push time). The row
        is marked `RETRYING` first, and nothing is locked while `push` runs,
        so a job that runs and fails again at once stores its new failure,
        which replaces the marked row; the delete afterwards removes only the
        marked row as it was read. If `push` raises, the row gets its reason
        back. Only one retry claims a row; another, at the same moment or of a
        row still marked, raises `FailedJobBusyError` and queues nothing. A
        crash after the push leaves the job queued and its row marked
        `retrying`: listed, never lost.
        """
        failure = self.find(identifier)
        if failure is None:
            return None
        if failure.reason == RETRYING:
            raise FailedJobBusyError(
                f"failed job {failure.id} is being retried already; if that retry died, its "
                f"job was probably queued: look before `craft queue:forget {failure.id}`"
            )
        this_row = (failed_jobs.c.id == failure.id) & (failed_jobs.c.failed_at == failure.failed_at)
        with self._writing() as connection:
            # Only one retry claims the row: the mark applies to the row as read.
            claimed = connection.execute(
                update(failed_jobs)
                .where(this_row, failed_jobs.c.reason == failure.reason)
                .values(reason=RETRYING)
            ).rowcount
        if claimed != 1:
            raise FailedJobBusyError(
                f"failed job {failure.id} changed while it was being retried "
                "(another retry took it); nothing was queued"
            )
        try:
            push(failure)
        except BaseException:
            with self._writing() as connection:
                connection.execute(
                    update(failed_jobs)
                    .where(this_row, failed_jobs.c.reason == RETRYING)
                    .values(reason=failure.reason)
                )
            raise
        with self._writing() as connection:
            connection.execute(
                delete(failed_jobs).where(this_row, failed_jobs.c.reason == RETRYING)
            )
        return failure

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        with self._writing() as connection:
            yield connection

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        try:
            with self.engine.begin() as connection:
                yield connection
        except (OperationalError, ProgrammingError) as error:
            if not self.available():
                raise FailedTableMissingError("failed_jobs", self.connection) from error
            raise


# The reason of a row whose job is being put back by `retry_elsewhere`.
RETRYING = "retrying"

# The longest job id `failed_jobs.uuid` holds (ours are 32 hex digits).
ID_LENGTH = 36


def _fitting_id(claimed: str, message: str) -> tuple[str, str]:
    """The id to store a failure under, and its message.

    An id that does not fit the column came from elsewhere (a forged or
    foreign message names any id it likes): the record gets an id derived
    from it, the same each time, and the message keeps the claimed one.
    """
    if len(claimed) <= ID_LENGTH:
        return claimed, message
    derived = hashlib.sha256(claimed.encode("utf-8", "replace")).hexdigest()[:32]
    shown = claimed if len(claimed) <= 1000 else claimed[:1000] + "..."
    return derived, f"{message} (the message claimed job id {shown!r})"


def _matching(identifier: int | str) -> Any:
    text = str(identifier).strip()
    if text.isdigit():
        return failed_jobs.c.id == int(text)
    return failed_jobs.c.uuid == text


def _stored(row: Any) -> StoredFailure:
    values = dict(row._mapping)
    values["payload"] = bytes(values["payload"])
    return StoredFailure(**values)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _naive_if_needed(engine: Engine, value: dt.datetime) -> dt.datetime:
    value = _aware(value).astimezone(dt.UTC)
    return value.replace(tzinfo=None) if engine.dialect.name != "postgresql" else value
