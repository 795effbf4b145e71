"""The `database` driver on SQLite, PostgreSQL and MariaDB: reserving, leases, parking, failures.

Time is a `ManualClock` shared by the queue, the driver and the runner, so
due times and leases are checked to the millisecond without sleeping.
"""

from __future__ import annotations

import os
import pickle
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from queueing import JobRunner, Signer
from queueing.clock import ManualClock
from queueing.connections import Connections
from queueing.drivers.database import DatabaseDriver, DatabaseUnavailableError
from queueing.execution import Outcome
from queueing.failed import DatabaseFailedJobStore, FailedJob
from queueing.operations import retry_failed
from queueing.payload import DIGEST_SIZE, MAGIC, Envelope
from queueing.schema import metadata, queue_jobs
from queueing.worker import Worker, WorkerOptions
from tests.database_fixtures import (
    ENGINES,
    START,
    Backend,
    drop_queue_jobs,
    insert_row,
    new_key,
    open_backend,
    reset_tables,
)
from tests.queueing.drivers import jobs_for_database as jobs

# Bytes before the pickle in a signed body: the magic, then the HMAC.
HEADER = len(MAGIC) + DIGEST_SIZE


def ms(seconds: float) -> int:
    """Epoch seconds as the integer milliseconds the table stores."""
    return round(seconds * 1000)


def work(backend: Backend) -> tuple[int, list[str], list[str]]:
    """Run a worker in this thread until the default queue is empty; return its output."""
    lines: list[str] = []
    errors: list[str] = []
    worker = Worker(
        backend.driver,
        backend.runner,
        WorkerOptions(stop_when_empty=True, sleep=0.01),
        output=lines.append,
        errors=errors.append,
    )
    return worker.run(), lines, errors


# Pushing and reserving ---------------------------------------------------------------------


def test_push_then_reserve_returns_the_envelope_with_one_attempt_and_leases_the_row(
    backend: Backend, markers_dir: Path
) -> None:
    [job_id] = backend.queue.push(jobs.Record, args=[str(markers_dir), "a"])

    held = backend.driver.reserve(["default"])

    assert held is not None
    envelope = held.envelope
    assert (envelope.id, envelope.queue, envelope.driver, envelope.attempts) == (
        job_id,
        "default",
        "database",
        1,
    )
    assert envelope.name == "tests.queueing.drivers.jobs_for_database.Record"
    job = backend.runner.signer.load(envelope.body)
    assert (job["obj"], job["args"]) == (jobs.Record, (str(markers_dir), "a"))
    [row] = backend.jobs()
    assert row.attempts == 1
    assert row.reserved_by == held.token
    assert row.reserved_until == row.available_at == ms(START + 60)


def test_two_reserves_never_get_the_same_job(backend: Backend, markers_dir: Path) -> None:
    pushed = backend.queue.push(jobs.Record, jobs.Record, args=[str(markers_dir), "a"])

    first = backend.driver.reserve(["default"])
    second = backend.driver.reserve(["default"])

    assert first is not None and second is not None
    assert sorted([first.envelope.id, second.envelope.id]) == sorted(pushed)
    assert backend.driver.reserve(["default"]) is None


def test_reservers_in_parallel_take_each_job_exactly_once(
    backend: Backend, markers_dir: Path
) -> None:
    pushed = backend.queue.push(*[jobs.Record] * 60, args=[str(markers_dir), "a"])
    taken: list[str] = []
    problems: list[BaseException] = []
    lock = threading.Lock()

    def reserve_all() -> None:
        driver = DatabaseDriver(
            backend.connections, backend.connection, retry_after=60, prefetch=1, clock=backend.clock
        )
        try:
            while (held := driver.reserve(["default"])) is not None:
                with lock:
                    taken.append(held.envelope.id)
                assert driver.acknowledge(held)
        except BaseException as error:
            problems.append(error)

    threads = [threading.Thread(target=reserve_all) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert problems == []
    assert sorted(taken) == sorted(pushed)
    assert backend.jobs() == []


def test_wait_is_honoured_to_the_millisecond(
    backend: Backend, clock: ManualClock, markers_dir: Path
) -> None:
    backend.queue.push(jobs.Record, args=[str(markers_dir), "a"], wait="10 seconds")
    [row] = backend.jobs()
    assert row.available_at == ms(START + 10)

    clock.advance(9.999)
    assert backend.driver.reserve(["default"]) is None

    clock.advance(0.001)
    held = backend.driver.reserve(["default"])
    assert held is not None and held.envelope.attempts == 1


def test_due_jobs_come_in_order_of_due_time_then_id(
    backend: Backend, clock: ManualClock, markers_dir: Path
) -> None:
    later = backend.queue.push(jobs.Record, args=[str(markers_dir), "a"], wait=5)
    tied = backend.queue.push(jobs.Record, jobs.Record, args=[str(markers_dir), "a"], wait=2)
    now = backend.queue.push(jobs.Record, args=[str(markers_dir), "a"])
    clock.advance(5)

    order = []
    while (held := backend.driver.reserve(["default"])) is not None:
        order.append(held.envelope.id)

    assert order == [*now, *tied, *later]


def test_queues_are_taken_in_the_priority_order_given(backend: Backend, markers_dir: Path) -> None:
    low = backend.queue.push(jobs.Record, args=[str(markers_dir), "a"], queue="low")
    high = backend.queue.push(jobs.Record, args=[str(markers_dir), "a"], queue="high")

    first = backend.driver.reserve(["high", "low"])
    second = backend.driver.reserve(["high", "low"])

    assert first is not None and second is not None
    assert [first.envelope.id, second.envelope.id] == [*high, *low]
    assert first.envelope.queue == "high"


# Settling ----------------------------------------------------------------------------------


def test_release_with_a_delay_puts_the_job_back_due_later_with_the_attempt_counted(
    backend: Backend, clock: ManualClock, markers_dir: Path
) -> None:
    backend.queue.push(jobs.Record, args=[str(markers_dir), "a"])
    held = backend.driver.reserve(["default"])
    assert held is not None

    assert backend.driver.release(held, 30)

    [row] = backend.jobs()
    assert (row.attempts, row.available_at, row.reserved_until, row.reserved_by) == (
        1,
        ms(START + 30),
        None,
        None,
    )
    clock.advance(29.999)
    assert backend.driver.reserve(["default"]) is None
    clock.advance(0.001)
    again = backend.driver.reserve(["default"])
    assert again is not None and again.envelope.attempts == 2


def test_release_without_counting_the_attempt_gives_it_back(
    backend: Backend, markers_dir: Path
) -> None:
    backend.queue.push(jobs.Record, args=[str(markers_dir), "a"])
    held = backend.driver.reserve(["default"])
    assert held is not None

    assert backend.driver.release(held, 0.0, count_attempt=False)

    [row] = backend.jobs()
    assert (row.attempts, row.available_at, row.reserved_by) == (0, ms(START), None)
    again = backend.driver.reserve(["default"])
    assert again is not None and again.envelope.attempts == 1


def test_an_expired_lease_makes_the_job_reservable_again(
    backend: Backend, clock: ManualClock, markers_dir: Path
) -> None:
    backend.queue.push(jobs.Record, args=[str(markers_dir), "a"])
    lost = backend.driver.reserve(["default"])
    assert lost is not None

    clock.advance(59.999)
    assert backend.driver.reserve(["default"]) is None
    clock.advance(0.001)
    taken = backend.driver.reserve(["default"])

    assert taken is not None
    assert taken.envelope.id == lost.envelope.id
    assert taken.envelope.attempts == 2
    # The first holder lost the job: it can neither finish nor release it.
    assert backend.driver.acknowledge(lost) is False
    assert backend.driver.release(lost, 0) is False
    [row] = backend.jobs()
    assert row.reserved_by == taken.token


def test_extend_keeps_the_lease(backend: Backend, clock: ManualClock, markers_dir: Path) -> None:
    backend.queue.push(jobs.Record, args=[str(markers_dir), "a"])
    held = backend.driver.reserve(["default"])
    assert held is not None

    clock.advance(50)
    assert backend.driver.extend(held)
    clock.advance(59.999)  # 110 s after the reservation, 60 s lease

    assert backend.driver.reserve(["default"]) is None
    [row] = backend.jobs()
    assert row.reserved_until == ms(START + 110)
    clock.advance(0.001)
    assert backend.driver.reserve(["default"]) is not None


def test_acknowledge_deletes_the_job(backend: Backend, markers_dir: Path) -> None:
    backend.queue.push(jobs.Record, args=[str(markers_dir), "a"])
    held = backend.driver.reserve(["default"])
    assert held is not None

    assert backend.driver.acknowledge(held) is True

    assert backend.jobs() == []
    assert backend.driver.counts() == []


# Operators ---------------------------------------------------------------------------------


def test_counts_show_pending_delayed_and_reserved_per_queue(
    backend: Backend, clock: ManualClock, markers_dir: Path
) -> None:
    arguments = [str(markers_dir), "a"]
    backend.queue.push(jobs.Record, jobs.Record, jobs.Record, args=arguments)
    backend.queue.push(jobs.Record, args=arguments, wait="1 minute")
    backend.queue.push(jobs.Record, args=arguments, queue="high")
    assert backend.driver.reserve(["default"]) is not None
    clock.advance(5)

    counts = {entry.queue: entry for entry in backend.driver.counts()}

    default, high = counts["default"], counts["high"]
    assert (default.pending, default.delayed, default.reserved) == (2, 1, 1)
    assert (high.pending, high.delayed, high.reserved) == (1, 0, 0)
    assert default.connection == backend.connection
    assert default.oldest_pending_age == pytest.approx(5.0)


def test_clear_deletes_the_jobs_no_worker_holds(backend: Backend, markers_dir: Path) -> None:
    arguments = [str(markers_dir), "a"]
    backend.queue.push(jobs.Record, jobs.Record, args=arguments)
    backend.queue.push(jobs.Record, jobs.Record, args=arguments, queue="high")
    held = backend.driver.reserve(["default"])
    assert held is not None

    assert backend.driver.clear(queue="high") == 2
    assert {row.queue for row in backend.jobs()} == {"default"}
    assert backend.driver.clear() == 1

    [row] = backend.jobs()
    assert row.reserved_by == held.token
    assert backend.driver.acknowledge(held)


def test_a_missing_table_is_a_clear_error_at_push_and_at_check(
    backend: Backend, markers_dir: Path
) -> None:
    expected = (
        f"table queue_jobs does not exist on connection '{backend.connection}': "
        "run craft migrate (after craft queue:table --jobs "
        "if databases/migrations has no queue_jobs migration)"
    )
    drop_queue_jobs(backend.engine)
    try:
        with pytest.raises(DatabaseUnavailableError) as at_push:
            backend.queue.push(jobs.Record, args=[str(markers_dir), "a"])
        with pytest.raises(DatabaseUnavailableError) as at_check:
            backend.driver.check()
    finally:
        metadata.create_all(backend.engine)

    assert str(at_push.value) == expected
    assert str(at_check.value) == expected
    assert (at_push.value.table, at_push.value.connection) == ("queue_jobs", backend.connection)


# Refused payloads, failures ----------------------------------------------------------------


def test_a_forged_row_is_parked_unopened_and_the_worker_goes_on(
    backend: Backend, markers_dir: Path, tmp_path: Path
) -> None:
    # A valid payload layout and a valid pickle that runs code when loaded,
    # signed with somebody else's key.
    forged = Signer(new_key()).dump({"obj": jobs.Forged(str(markers_dir)), "args": ()})
    control = tmp_path / "control"
    control.mkdir()
    pickle.loads(Signer(new_key()).dump({"obj": jobs.Forged(str(control))})[HEADER:])
    assert jobs.markers(control, "forged", "unpickled"), "the forged pickle must run code"
    insert_row(backend.engine, forged, available_at=START, name="app.jobs.Innocent")
    backend.queue.push(jobs.Record, args=[str(markers_dir), "after"])

    status, lines, errors = work(backend)

    assert status == 0
    assert jobs.markers(markers_dir, "forged", "unpickled") == []
    assert len(jobs.markers(markers_dir, "after")) == 1
    # The name is only what the row claims: the payload was never verified.
    assert "unverified name 'app.jobs.Innocent'  " in lines[0] and "parked" in lines[0]
    assert lines[1].split()[2] == "Record" and "done" in lines[1]
    [told] = errors
    assert told.startswith("job ") and "parked without loading it" in told
    assert "unverified name 'app.jobs.Innocent': ForgedPayloadError: payload signature" in told
    [failure] = backend.failures()
    assert (failure.reason, failure.exception_type, failure.name) == (
        "signature",
        "ForgedPayloadError",
        "app.jobs.Innocent",
    )
    assert bytes(failure.payload) == forged
    assert backend.jobs() == []


def test_a_corrupt_row_is_parked_and_the_worker_goes_on(
    backend: Backend, markers_dir: Path
) -> None:
    insert_row(backend.engine, b"\x00not a payload", available_at=START, name="app.jobs.Mangled")
    backend.queue.push(jobs.Record, args=[str(markers_dir), "after"])

    status, lines, _errors = work(backend)

    assert status == 0
    assert len(jobs.markers(markers_dir, "after")) == 1
    assert "parked" in lines[0] and "done" in lines[1]
    [failure] = backend.failures()
    assert (failure.reason, failure.exception_type) == ("corrupt", "CorruptPayloadError")
    assert bytes(failure.payload) == b"\x00not a payload"
    assert backend.jobs() == []


def test_the_runner_parks_a_forged_envelope_it_is_handed(
    backend: Backend, markers_dir: Path
) -> None:
    forged = Signer(new_key()).dump({"obj": jobs.Forged(str(markers_dir)), "args": ()})
    insert_row(backend.engine, forged, available_at=START, name="app.jobs.Innocent")
    held = backend.driver.reserve(["default"])
    assert held is not None

    result = backend.runner.run(held.envelope)

    assert result.outcome is Outcome.PARKED
    assert jobs.markers(markers_dir, "forged", "unpickled") == []
    assert [failure.reason for failure in backend.failures()] == ["signature"]


def test_failed_jobs_rows_hold_what_an_operator_needs(backend: Backend) -> None:
    [job_id] = backend.queue.push(jobs.Explode, args=["the disk is full"], queue="reports")
    backend.driver.default_queue = "reports"

    lines: list[str] = []
    errors: list[str] = []
    Worker(
        backend.driver,
        backend.runner,
        WorkerOptions(queues=["reports"], stop_when_empty=True, sleep=0.01),
        output=lines.append,
        errors=errors.append,
    ).run()

    [failure] = backend.failures()
    assert failure.uuid == job_id
    assert (failure.driver, failure.connection, failure.queue) == (
        "database",
        backend.connection,
        "reports",
    )
    assert failure.name == "tests.queueing.drivers.jobs_for_database.Explode"
    assert failure.reason == "failed"
    assert (failure.exception_type, failure.message) == ("ValueError", "the disk is full")
    assert failure.traceback.startswith("Traceback (most recent call last):")
    assert "raise ValueError(message)" in failure.traceback
    assert failure.attempts == 1
    assert (failure.host, failure.pid) == (socket.gethostname(), os.getpid())
    assert failure.failed_at is not None
    assert "failed" in lines[0] and "ValueError: the disk is full" in lines[0]
    assert any(job_id in line for line in errors)
    assert backend.jobs() == []


def test_retry_failed_requeues_the_job_and_deletes_its_failed_row(
    backend: Backend, markers_dir: Path
) -> None:
    [job_id] = backend.queue.push(jobs.Explode, args=["once"])
    work(backend)
    [failure] = backend.failures()

    [requeued] = retry_failed(backend.store, backend.queue, [failure.id])

    assert requeued.uuid == job_id
    assert backend.failures() == []
    [row] = backend.jobs()
    assert (row.uuid, row.queue, row.attempts, row.reserved_by) == (job_id, "default", 0, None)
    held = backend.driver.reserve(["default"])
    assert held is not None and held.envelope.attempts == 1


def test_a_retry_that_cannot_requeue_keeps_the_failed_row(backend: Backend) -> None:
    backend.queue.push(jobs.Explode, args=["once"])
    work(backend)
    [failure] = backend.failures()

    def requeue_then_crash(connection, stored) -> None:  # type: ignore[no-untyped-def]
        backend.driver.requeue(connection, stored.envelope(backend.clock.now()))
        raise RuntimeError("the process died between the insert and the delete")

    with pytest.raises(RuntimeError):
        backend.store.retry(failure.id, requeue_then_crash)

    assert [row.id for row in backend.failures()] == [failure.id]
    assert backend.jobs() == []


def test_a_failure_records_the_connection_of_the_queue_not_of_the_failed_store(
    tmp_path: Path,
) -> None:
    """Queue on PostgreSQL, failed_jobs on SQLite (FAILED_CONNECTION left to the default)."""
    with open_backend("postgresql", tmp_path, retry_after=60) as backend:
        failed_url = f"sqlite:///{tmp_path / 'failed.sqlite'}"
        connections = Connections({"sqlite": failed_url, "pgsql": backend.url}, "sqlite")
        try:
            reset_tables(connections.engine("sqlite"))
            store = DatabaseFailedJobStore(connections, None)
            driver = DatabaseDriver(connections, "pgsql", retry_after=60, prefetch=1)
            runner = JobRunner(backend.runner.container, backend.runner.signer, store)
            backend.queue.push(jobs.Explode, args=["boom"])
            Worker(
                driver,
                runner,
                WorkerOptions(stop_when_empty=True, sleep=0.01),
                output=lambda _line: None,
                errors=lambda _line: None,
            ).run()

            [failure] = store.all()
            assert failure.connection == "pgsql"
            retry_failed(store, backend.queue.driver("database"), [failure.id])
            assert [row.uuid for row in backend.jobs()] == [failure.uuid]
        finally:
            connections.close()


def test_a_lease_lost_to_another_worker_is_not_acknowledged_by_the_first(
    backend: Backend, clock: ManualClock, markers_dir: Path
) -> None:
    backend.queue.push(jobs.Record, args=[str(markers_dir), "a"])
    first = backend.driver.reserve(["default"])
    assert first is not None
    with backend.engine.begin() as connection:
        connection.execute(update(queue_jobs).values(available_at=ms(START)))
    second = backend.driver.reserve(["default"])
    assert second is not None

    assert backend.driver.extend(first) is False
    assert backend.driver.acknowledge(second) is True
    assert backend.jobs() == []


# Reserving ahead (prefetch) and waking idle workers ----------------------------------------


def prefetching(backend: Backend, prefetch: int) -> DatabaseDriver:
    """A second driver on the backend's connection that reserves `prefetch` jobs at once."""
    return DatabaseDriver(
        backend.connections,
        backend.connection,
        retry_after=60,
        prefetch=prefetch,
        clock=backend.clock,
    )


def test_prefetch_reserves_a_batch_under_one_lease_and_hands_it_out_in_due_order(
    backend: Backend, clock: ManualClock, markers_dir: Path
) -> None:
    later = backend.queue.push(jobs.Record, args=[str(markers_dir), "a"], wait=2)
    now = backend.queue.push(jobs.Record, jobs.Record, args=[str(markers_dir), "a"])
    clock.advance(2)
    driver = prefetching(backend, 5)

    first = driver.reserve(["default"])

    assert first is not None
    assert {row.reserved_by for row in backend.jobs()} == {first.token}
    attempts = {row.uuid: row.attempts for row in backend.jobs()}
    assert attempts == {first.envelope.id: 1, now[1]: 0, later[0]: 0}
    order = [first.envelope.id]
    while (held := driver.reserve(["default"])) is not None:
        order.append(held.envelope.id)
        assert held.envelope.attempts == 1
        assert {row.uuid: row.attempts for row in backend.jobs()}[held.envelope.id] == 1
    assert order == [*now, *later]


def test_settling_a_job_counts_the_attempt_of_the_one_reserved_behind_it_before_it_runs(
    backend: Backend, markers_dir: Path
) -> None:
    pushed = backend.queue.push(jobs.Record, jobs.Record, args=[str(markers_dir), "a"])
    driver = prefetching(backend, 5)
    first = driver.reserve(["default"])
    assert first is not None

    assert driver.acknowledge(first)

    [row] = backend.jobs()
    assert (row.uuid, row.attempts) == (pushed[1], 1)
    second = driver.reserve(["default"])
    assert second is not None and second.envelope.attempts == 1
    assert driver.release(second, 0.0, count_attempt=False)
    assert [row.attempts for row in backend.jobs()] == [0]


def test_jobs_reserved_behind_a_job_that_killed_its_worker_keep_their_attempts(
    backend: Backend, clock: ManualClock, markers_dir: Path
) -> None:
    poison, *others = backend.queue.push(*[jobs.Record] * 3, args=[str(markers_dir), "a"])
    dead = prefetching(backend, 5)
    assert dead.reserve(["default"]) is not None  # its worker dies with the batch in hand
    clock.advance(61)

    survivor = prefetching(backend, 5)
    again = survivor.reserve(["default"])

    assert again is not None and again.envelope.id == poison
    assert again.envelope.attempts == 2
    attempts = {row.uuid: row.attempts for row in backend.jobs()}
    assert attempts == {poison: 2, others[0]: 0, others[1]: 0}


def test_jobs_reserved_ahead_are_given_back_with_their_attempt_when_the_worker_stops(
    backend: Backend, markers_dir: Path
) -> None:
    backend.queue.push(*[jobs.Record] * 4, args=[str(markers_dir), "a"])
    driver = prefetching(backend, 10)
    held = driver.reserve(["default"])
    assert held is not None

    assert driver.release_unstarted() == 3

    rows = {row.uuid: row for row in backend.jobs()}
    assert rows.pop(held.envelope.id).reserved_by == held.token
    assert [(row.attempts, row.reserved_by) for row in rows.values()] == [(0, None)] * 3
    assert backend.driver.reserve(["default"]) is not None
    assert driver.acknowledge(held)


def test_a_job_that_needs_its_lease_extended_gives_back_the_jobs_reserved_behind_it(
    backend: Backend, markers_dir: Path
) -> None:
    backend.queue.push(*[jobs.Record] * 3, args=[str(markers_dir), "a"])
    driver = prefetching(backend, 10)
    held = driver.reserve(["default"])
    assert held is not None

    assert driver.extend(held)

    others = [row for row in backend.jobs() if row.uuid != held.envelope.id]
    assert [(row.attempts, row.reserved_by) for row in others] == [(0, None)] * 2
    assert driver.reserve(["default"]) is not None  # reserved afresh, not from the batch


def test_a_job_reserved_ahead_whose_lease_is_half_gone_is_given_back_not_run(
    backend: Backend, clock: ManualClock, markers_dir: Path
) -> None:
    backend.queue.push(jobs.Record, jobs.Record, args=[str(markers_dir), "a"])
    driver = prefetching(backend, 10)
    first = driver.reserve(["default"])
    assert first is not None and driver.acknowledge(first)
    clock.advance(31)  # 29 s of the 60 s lease left

    again = driver.reserve(["default"])

    assert again is not None
    assert again.envelope.attempts == 1  # the batch's attempt was given back first
    [row] = backend.jobs()
    assert row.reserved_by == again.token and row.reserved_until == ms(START + 91)


def test_a_stopped_worker_never_runs_jobs_it_reserved_ahead_and_gives_them_back(
    backend: Backend, markers_dir: Path
) -> None:
    backend.queue.push(*[jobs.Record] * 5, args=[str(markers_dir), "a"])
    driver = prefetching(backend, 10)
    worker = Worker(
        driver,
        backend.runner,
        WorkerOptions(max_jobs=2, sleep=0.01),
        output=lambda line: None,
        errors=lambda line: None,
    )

    worker.run()

    assert len(jobs.markers(markers_dir, "a")) == 2
    assert sorted((row.attempts, row.reserved_by) for row in backend.jobs()) == [(0, None)] * 3


def test_an_idle_wait_ends_when_the_next_delayed_job_is_due(
    backend: Backend, markers_dir: Path
) -> None:
    backend.queue.push(jobs.Record, args=[str(markers_dir), "a"], wait=0.3)
    started = time.monotonic()

    backend.driver.wait_for_jobs(["default"], None, 10.0, threading.Event())

    assert 0.25 <= time.monotonic() - started < 5


def test_an_idle_wait_ends_as_soon_as_it_is_woken(backend: Backend) -> None:
    wake = threading.Event()
    threading.Timer(0.2, wake.set).start()
    started = time.monotonic()

    backend.driver.wait_for_jobs(["default"], None, 10.0, wake)

    assert time.monotonic() - started < 5


@pytest.mark.parametrize("engine", ["postgresql", "sqlite"])
def test_an_idle_worker_on_postgresql_or_sqlite_wakes_when_a_job_is_pushed(
    engine: str, tmp_path: Path, markers_dir: Path
) -> None:
    with open_backend(engine, tmp_path, retry_after=60) as backend:
        driver = backend.driver
        threading.Timer(
            0.3, lambda: backend.queue.push(jobs.Record, args=[str(markers_dir), "a"])
        ).start()
        started = time.monotonic()

        driver.wait_for_jobs(["default"], None, 20.0, threading.Event())

        assert time.monotonic() - started < 10, "the push did not wake the waiting worker"
        assert driver.reserve(["default"]) is not None


def test_on_postgresql_worker_commits_skip_the_disk_wait_but_pushes_do_not(
    tmp_path: Path,
) -> None:
    with open_backend("postgresql", tmp_path, retry_after=60) as backend:
        backend.queue.push(jobs.Explode, args=["never run"])
        reservation = backend.driver.reserve(["default"])
        assert reservation is not None
        assert backend.driver.acknowledge(reservation)

        # The worker's own connection: reserve and acknowledge commit without
        # waiting for the WAL flush (a crash can only make a job run again).
        kept = backend.connections.kept(backend.connection).cursor()
        kept.execute("SHOW synchronous_commit")
        assert kept.fetchone()[0] == "off"
        # Pushes commit on pooled connections that keep the server's setting.
        with backend.connections.engine(backend.connection).connect() as pooled:
            assert pooled.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
        assert backend.jobs() == []


def deadlock() -> Exception:
    """The error InnoDB raises when it rolls a transaction back for a deadlock."""
    import pymysql

    return pymysql.err.OperationalError(
        1213, "Deadlock found when trying to get lock; try restarting transaction"
    )


def test_on_mariadb_a_push_rolled_back_by_a_deadlock_is_run_again_and_queued_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.engine import Connection
    from sqlalchemy.exc import OperationalError

    with open_backend("mariadb", tmp_path, retry_after=60) as backend:
        real = Connection.execute
        failures: list[int] = []

        def execute(connection: Connection, statement: object, *arguments: object) -> object:
            # Failure injection: the server's deadlock, once, on the insert.
            if not failures and str(statement).startswith("INSERT INTO queue_jobs"):
                failures.append(1)
                raise OperationalError(str(statement), None, deadlock())
            return real(connection, statement, *arguments)

        monkeypatch.setattr(Connection, "execute", execute)
        [job_id] = backend.queue.push(jobs.Explode, args=["never run"])

        assert failures == [1]
        assert [row.uuid for row in backend.jobs()] == [job_id]


def test_on_mariadb_a_reservation_rolled_back_by_a_deadlock_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_backend("mariadb", tmp_path, retry_after=60) as backend:
        [job_id] = backend.queue.push(jobs.Explode, args=["never run"])
        real = backend.connections.kept
        failures: list[int] = []

        class DeadlockingCursor:
            """Raises the server's deadlock on its first statement (failure injection)."""

            def __init__(self, cursor: Any) -> None:
                self._cursor = cursor

            def execute(self, *arguments: Any) -> Any:
                if not failures:
                    failures.append(1)
                    raise deadlock()
                return self._cursor.execute(*arguments)

            def __getattr__(self, name: str) -> Any:
                return getattr(self._cursor, name)

        class Kept:
            def __init__(self, connection: Any) -> None:
                self._connection = connection

            def cursor(self) -> DeadlockingCursor:
                return DeadlockingCursor(self._connection.cursor())

        monkeypatch.setattr(
            backend.connections, "kept", lambda *args, **kwargs: Kept(real(*args, **kwargs))
        )
        reservation = backend.driver.reserve(["default"])

        assert failures == [1]
        assert reservation is not None and reservation.envelope.id == job_id
        assert backend.driver.acknowledge(reservation)
        assert backend.jobs() == []


def test_the_jobs_a_dead_worker_process_held_are_given_back_at_once_with_their_attempts(
    backend: Backend, markers_dir: Path
) -> None:
    pushed = backend.queue.push(*[jobs.Record] * 3, args=[str(markers_dir), "a"])
    driver = prefetching(backend, 5)
    held = driver.reserve(["default"])
    assert held is not None and held.token.startswith(f"{socket.gethostname()}:{os.getpid()}:")

    assert backend.driver.release_held_by(os.getpid() + 1) == 0
    assert backend.driver.release_held_by(os.getpid()) == 3

    attempts = {row.uuid: (row.attempts, row.reserved_by) for row in backend.jobs()}
    assert attempts == {pushed[0]: (1, None), pushed[1]: (0, None), pushed[2]: (0, None)}
    again = backend.driver.reserve(["default"])
    assert again is not None and again.envelope.attempts in (1, 2)


def test_a_failure_whose_claimed_id_is_too_long_is_stored_under_a_derived_id(
    backend: Backend,
) -> None:
    claimed = "x" * 300
    envelope = Envelope(
        id=claimed,
        name="app.jobs.Innocent",
        queue="q" * 250,
        driver="amqp",
        created="2026-12-01T00:00:00+00:00",
        available_at=0.0,
        body=b"not ours",
        attempts=1,
    )
    failure = FailedJob.from_error(envelope, ValueError("not signed"), 0.0, reason="signature")

    backend.store.store(failure)
    backend.store.store(failure)  # the same message delivered again: still one row

    [row] = backend.failures()
    assert len(row.uuid) == 32 and row.uuid != claimed[:32]
    assert repr(claimed) in row.message
    assert row.queue == "q" * 191


@pytest.mark.parametrize("engine", ENGINES)
def test_a_job_that_releases_itself_runs_again_later_with_its_attempt_given_back(
    engine: str, tmp_path: Path, markers_dir: Path
) -> None:
    with open_backend(engine, tmp_path) as backend:
        _release_and_run(backend, markers_dir)


def _release_and_run(backend: Backend, markers_dir: Path) -> None:
    backend.queue.push(jobs.ReleasesOnce, args=[str(markers_dir), "polite"])
    lines: list[str] = []

    Worker(
        backend.driver,
        backend.runner,
        WorkerOptions(stop_when_empty=True, sleep=0.05),
        output=lines.append,
        errors=lines.append,
    ).run()

    assert len(jobs.markers(markers_dir, "polite", "attempt")) == 2
    assert len(jobs.markers(markers_dir, "polite")) == 1
    assert backend.jobs() == [] and backend.failures() == []
    assert "released" in lines[0] and "done" in lines[1]


# Exactly one failure record -------------------------------------------------------------


def test_a_failed_job_is_stored_and_removed_in_one_transaction(backend: Backend) -> None:
    backend.queue.push(jobs.Explode, args=["boom"])
    held = backend.driver.reserve(["default"])
    assert held is not None
    result = backend.runner.attempt(held.envelope)
    assert result.failure is not None and backend.failures() == []

    def crash(connection: Any) -> None:
        raise RuntimeError("the worker died between the insert and the delete")

    with pytest.raises(RuntimeError):
        backend.store.store(result.failure, then=crash)
    assert backend.failures() == [] and len(backend.jobs()) == 1  # nothing half-written

    assert backend.driver.shares_transaction_with(held, backend.store)
    assert backend.driver.bury_stored(held, result.failure, backend.store)
    assert [row.uuid for row in backend.failures()] == [held.envelope.id]
    assert backend.jobs() == []


def test_storing_the_same_failure_twice_keeps_one_record(backend: Backend) -> None:
    backend.queue.push(jobs.Explode, args=["boom"])
    held = backend.driver.reserve(["default"])
    assert held is not None
    failure = backend.runner.attempt(held.envelope).failure
    assert failure is not None

    assert backend.store.store(failure) is True
    assert backend.store.store(failure) is False

    assert len(backend.failures()) == 1
    assert backend.store.has_failure(held.envelope.id)


def test_a_copy_of_a_job_whose_failure_was_stored_is_settled_without_failing_again(
    backend: Backend, clock: ManualClock, markers_dir: Path
) -> None:
    journal = markers_dir / "failed-calls"
    [job_id] = backend.queue.push(jobs.ExplodeAndNote, args=[str(journal)])
    held = backend.driver.reserve(["default"])
    assert held is not None
    backend.runner.run(held.envelope)  # stored, then the worker dies before removing the job
    clock.advance(61)

    status, lines, _errors = work(backend)

    assert status == 0
    assert journal.read_text().splitlines() == ["failed() called"]
    [row] = backend.failures()
    assert (row.uuid, row.reason, row.attempts) == (job_id, "failed", 1)
    assert backend.jobs() == []
    assert any("stored already" in line for line in lines)
