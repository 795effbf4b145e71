"""What operators do to queues: put failed jobs back, mainly. Commands call these."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.engine import Connection

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
    corrupt) go back only when named. Each row is deleted in the transaction that
    re-queues it, so a crash in between never loses a job.
    """
    if identifiers is None:
        identifiers = [
            failure.id
            for failure in store.all(driver=driver)
            if failure.reason in RETRIED_BY_DEFAULT
        ]
    requeued = []
    for identifier in identifiers:
        failure = store.retry(
            identifier, lambda connection, failure: _requeue(store, queue, connection, failure)
        )
        if failure is None:
            raise NoSuchFailedJobError(f"no failed job with id {identifier!r}")
        requeued.append(failure)
    return requeued


def _requeue(
    store: DatabaseFailedJobStore, queue: Queue, connection: Connection, failure: StoredFailure
) -> None:
    try:
        driver = queue.connection(failure.driver)
    except UnknownDriverError as error:
        raise UnknownDriverError(
            f"failed job {failure.id} came from driver {failure.driver!r}, "
            "which is no longer configured"
        ) from error
    envelope = failure.envelope(queue.clock.now())
    if isinstance(driver, DatabaseDriver):
        target = failure.connection or driver.connection
        if target == store.connection:
            driver.requeue(connection, envelope)
        else:
            driver.push([envelope], channel=target)
        return
    driver.push([envelope])
