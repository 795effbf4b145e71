"""`craft queue:retry` on every engine, for jobs that do not go back into the store's database.

A job of the `sync` driver runs inside the retry itself; one that fails again
must have its new failure stored, with no lock of the retry in its way. A
retry whose push cannot be made leaves the failed row as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from queueing import Queue
from queueing.drivers.sync import SyncDriver
from queueing.failed import FailedJobBusyError, StoredFailure
from tests.database_fixtures import (
    ENGINES,
    Backend,
    backend_env,
    craft,
    make_project,
    open_backend,
)
from tests.queueing.drivers import jobs_for_database as jobs


@pytest.fixture(params=ENGINES)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Empty tables on SQLite, PostgreSQL or MariaDB."""
    with open_backend(request.param, tmp_path) as backend:
        yield backend


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A marker folder in which FailWhileBroken fails."""
    path = tmp_path / "markers"
    path.mkdir()
    (path / "broken").touch()
    return path


def fail_on_sync(backend: Backend, broken: Path) -> str:
    """Fail a FailWhileBroken on the sync driver, stored in the backend; return its id."""
    queue = Queue({"sync": lambda: SyncDriver(backend.runner)}, "sync", backend.queue.signer)
    [job_id] = queue.push(jobs.FailWhileBroken, args=[str(broken), "job"])
    [row] = backend.failures()
    assert (row.uuid, row.driver) == (job_id, "sync")
    return job_id


def test_retrying_a_sync_job_that_fails_again_stores_its_new_failure(
    backend: Backend, broken: Path, tmp_path: Path
) -> None:
    job_id = fail_on_sync(backend, broken)
    [before] = backend.failures()
    environment = backend_env(make_project(tmp_path), backend)

    result = craft(tmp_path / "project", environment, "queue:retry", str(before.id), timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"retrying {before.id} ")
    [after] = backend.failures()
    assert after.uuid == job_id
    assert after.pid != before.pid  # stored anew by the process that retried it
    assert "the mail server is down" in after.message
    assert backend.jobs() == []


def test_retrying_a_sync_job_that_now_succeeds_runs_it_and_removes_its_failure(
    backend: Backend, broken: Path, tmp_path: Path
) -> None:
    fail_on_sync(backend, broken)
    [before] = backend.failures()
    (broken / "broken").unlink()
    environment = backend_env(make_project(tmp_path), backend)

    result = craft(tmp_path / "project", environment, "queue:retry", str(before.id), timeout=60)

    assert result.returncode == 0, result.stderr
    assert jobs.runs_by_name(broken) == {"job": 1}
    assert backend.failures() == []


def test_a_retry_whose_push_cannot_be_made_exits_non_zero_and_keeps_the_failed_row(
    backend: Backend, broken: Path, tmp_path: Path
) -> None:
    fail_on_sync(backend, broken)
    with backend.engine.begin() as connection:
        connection.exec_driver_sql("UPDATE failed_jobs SET driver = 'amqp'")
    [before] = backend.failures()
    environment = backend_env(
        make_project(tmp_path),
        backend,
        QUEUE_AMQP_PORT="1",
        QUEUE_AMQP_CONNECTION_ATTEMPTS="1",
        QUEUE_AMQP_PUBLISH_ATTEMPTS="1",
    )

    result = craft(tmp_path / "project", environment, "queue:retry", str(before.id), timeout=60)

    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("craft: ")
    assert backend.failures() == [before]
    assert backend.jobs() == []


def test_two_retries_of_one_failed_job_push_it_once(
    backend: Backend, broken: Path, tmp_path: Path
) -> None:
    fail_on_sync(backend, broken)
    [before] = backend.failures()
    pushed: list[str] = []

    def push_and_race(failure: StoredFailure) -> None:
        # A second retry of the same row starts while the first is pushing.
        with pytest.raises(FailedJobBusyError):
            backend.store.retry_elsewhere(failure.id, lambda other: pushed.append("second"))
        pushed.append("first")

    backend.store.retry_elsewhere(before.id, push_and_race)

    assert pushed == ["first"]
    assert backend.failures() == []
