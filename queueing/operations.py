"""What operators do to queues: put failed jobs back, mainly. Commands call these."""

from __future__ import annotations

from collections.abc import Iterable

from queueing.drivers.base import Driver
from queueing.drivers.database import DatabaseDriver
from queueing.failed import DatabaseFailedJobStore, StoredFailure
from queueing.manager import Queue, UnknownDriverError

# Reasons of the failures a retry of everything puts back: jobs of ours that
# raised or killed their worker, never payloads that were refused unread.
RETRIED_BY_DEFAULT = ("failed", "died")


class NoSuchFailedJobError(LookupError):
    """An id that is not in `failed_jobs`."""


def retry_failed(
    store: DatabaseFailedJobStore,
    queue: Queue,
    identifiers: Iterable[int | str] | None = None,
    driver: str | None = None,
) -> list[StoredFailure]:
    """Put failed jobs back on the queue they came from; return those re-queued.

    With `identifiers` None, every failed job (of `driver`, when given) that
    failed or killed its worker goes back; refused payloads (bad signature,
    corrupt) go back only when named. A job going back to `queue_jobs` on the
    store's own database is inserted in the transaction that deletes its
    row; any other is pushed first and its row deleted after, with nothing
    locked meanwhile (see `DatabaseFailedJobStore.retry_elsewhere`). Either
    way a crash in between never loses a job.
    """
    if identifiers is None:
        identifiers = [
            failure.id
            for failure in store.all(driver=driver)
            if failure.reason in RETRIED_BY_DEFAULT
        ]
    requeued = []
    for identifier in identifiers:
        failure = _retry_one(store, queue, identifier)
        if failure is None:
            raise NoSuchFailedJobError(f"no failed job with id {identifier!r}")
        requeued.append(failure)
    return requeued


def _retry_one(
    store: DatabaseFailedJobStore, queue: Queue, identifier: int | str
) -> StoredFailure | None:
    """Re-queue one failure: in the store's own transaction when the queue shares it."""
    failure = store.find(identifier)
    if failure is None:
        return None
    driver = _driver_of(queue, failure)
    if isinstance(driver, DatabaseDriver) and _connection_of(driver, failure) == store.connection:
        return store.retry(
            failure.id,
            lambda connection, row: driver.requeue(connection, row.envelope(queue.clock.now())),
        )
    return store.retry_elsewhere(failure.id, lambda row: _push(driver, queue, row))


def _driver_of(queue: Queue, failure: StoredFailure) -> Driver:
    try:
        return queue.connection(failure.driver)
    except UnknownDriverError as error:
        raise UnknownDriverError(
            f"failed job {failure.id} came from driver {failure.driver!r}, "
            "which is no longer configured"
        ) from error


def _connection_of(driver: DatabaseDriver, failure: StoredFailure) -> str:
    return failure.connection or driver.connection


def _push(driver: Driver, queue: Queue, failure: StoredFailure) -> None:
    envelope = failure.envelope(queue.clock.now())
    if isinstance(driver, DatabaseDriver):
        driver.push([envelope], channel=_connection_of(driver, failure))
    else:
        driver.push([envelope])
