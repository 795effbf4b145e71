"""The database driver with real `craft queue:work` processes: kills, signals, restarts.

Each test pushes from this process into the tables a worker process reads
(same URL, same key), then counts the marker files the jobs leave.
"""

from __future__ import annotations

import functools
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.database_fixtures import (
    ENGINES,
    Backend,
    backend_env,
    make_project,
    open_backend,
    start_worker,
    wait_until,
    workers,
)
from tests.queueing.drivers import jobs_for_database as jobs

RETRY_AFTER = 2.0


@pytest.fixture(params=ENGINES)
def live_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Empty tables on SQLite, PostgreSQL or MariaDB, on the real clock workers read too."""
    with open_backend(request.param, tmp_path, retry_after=RETRY_AFTER) as backend:
        yield backend


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> Iterator[Backend]:
    """Empty tables in a SQLite file."""
    with open_backend("sqlite", tmp_path, retry_after=RETRY_AFTER) as backend:
        yield backend


def test_a_job_whose_worker_was_killed_is_finished_by_another_once_the_lease_expired(
    live_backend: Backend, markers_dir: Path, tmp_path: Path
) -> None:
    backend = live_backend
    project = make_project(tmp_path, retry_after=RETRY_AFTER)
    environment = backend_env(project, backend)
    [job_id] = backend.queue.push(jobs.SlowRecord, args=[str(markers_dir), "job", 1.0])

    with workers() as started:
        first = start_worker(project, environment, "--sleep", "0.05")
        started.append(first)
        wait_until(
            lambda: jobs.markers(markers_dir, "job", "started"), 20, "the first worker never began"
        )
        first.signal(signal.SIGKILL)
        first.wait(timeout=10)
        [row] = backend.jobs()
        lease_end = row.reserved_until / 1000
        assert row.attempts == 1

        second = start_worker(project, environment, "--max-jobs", "1", "--sleep", "0.05")
        started.append(second)
        assert second.wait(timeout=30) == 0, second.errors()

    assert len(jobs.markers(markers_dir, "job", "started")) == 2
    assert len(jobs.markers(markers_dir, "job")) == 1
    _first_start, second_start = jobs.marker_times(markers_dir, "job", "started")
    # Leases end on a whole millisecond.
    assert second_start >= lease_end - 0.001, "the job was taken again before its lease ran out"
    assert f"{job_id[:12]}  default  done" in second.output()
    assert backend.jobs() == []
    assert backend.failures() == []


def drain_with_three_workers(
    backend: Backend, project: Path, markers_dir: Path, count: int
) -> set[int]:
    """Push `count` jobs while three idle workers wait; return the pids that ran them."""
    environment = backend_env(project, backend)
    with workers() as started:
        for _ in range(3):
            started.append(start_worker(project, environment, "--sleep", "0.05"))
        for worker in started:
            wait_until(lambda worker=worker: "worker " in worker.output(), 30, "no worker banner")

        for first in range(0, count, 250):
            backend.queue.push(
                *[
                    functools.partial(jobs.record, str(markers_dir), f"{number:04d}")
                    for number in range(first, min(first + 250, count))
                ]
            )
        wait_until(
            lambda: len(jobs.markers(markers_dir)) >= count and not backend.jobs(),
            120,
            "the workers did not drain the queue",
            interval=0.2,
        )
        for worker in started:
            worker.signal(signal.SIGTERM)
        for worker in started:
            assert worker.wait(timeout=30) == 0, worker.errors()
    return {int(path.name.split(".")[2]) for path in jobs.markers(markers_dir)}


def test_three_workers_drain_a_thousand_jobs_each_run_exactly_once(
    live_backend: Backend, markers_dir: Path, tmp_path: Path
) -> None:
    backend = live_backend
    project = make_project(tmp_path)

    pids = drain_with_three_workers(backend, project, markers_dir, 1000)

    assert jobs.runs_by_name(markers_dir) == {f"{number:04d}": 1 for number in range(1000)}
    assert len(pids) == 3, "every worker should have taken jobs"
    assert backend.jobs() == []
    assert backend.failures() == []


def test_sigterm_lets_the_job_in_hand_finish_within_the_grace(
    sqlite_backend: Backend, markers_dir: Path, tmp_path: Path
) -> None:
    project = make_project(tmp_path)
    backend = sqlite_backend
    [job_id] = backend.queue.push(jobs.SlowRecord, args=[str(markers_dir), "job", 1.0])
    backend.queue.push(jobs.Record, args=[str(markers_dir), "untouched"])

    with workers() as started:
        worker = start_worker(
            project, backend_env(project, backend), "--grace", "20", "--sleep", "0.05"
        )
        started.append(worker)
        wait_until(lambda: jobs.markers(markers_dir, "job", "started"), 20, "the job never began")
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, worker.errors()

    assert "SIGTERM received" in worker.errors()
    assert f"{job_id[:12]}  default  done" in worker.output()
    assert jobs.runs_by_name(markers_dir) == {"job": 1}
    [row] = backend.jobs()
    assert (row.name, row.attempts) == ("tests.queueing.drivers.jobs_for_database.Record", 0)


def test_sigterm_releases_a_job_that_outlives_the_grace_without_spending_an_attempt(
    sqlite_backend: Backend, markers_dir: Path, tmp_path: Path
) -> None:
    project = make_project(tmp_path)
    backend = sqlite_backend
    [job_id] = backend.queue.push(jobs.SlowRecord, args=[str(markers_dir), "job", 60])

    with workers() as started:
        worker = start_worker(
            project, backend_env(project, backend), "--grace", "0.5", "--sleep", "0.05"
        )
        started.append(worker)
        wait_until(lambda: jobs.markers(markers_dir, "job", "started"), 20, "the job never began")
        [held] = backend.jobs()
        assert held.attempts == 1 and held.reserved_by is not None
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, worker.errors()

    assert re.search(
        rf"{job_id[:12]}  default  released +\S+ m?s  \(worker stopping\)", worker.output()
    ), worker.output()
    assert jobs.markers(markers_dir, "job") == []
    [row] = backend.jobs()
    assert (row.uuid, row.attempts, row.reserved_by, row.reserved_until) == (job_id, 0, None, None)
    assert row.available_at <= time.time() * 1000
    assert backend.failures() == []


def test_a_second_sigterm_exits_at_once_and_the_lease_keeps_the_job(
    sqlite_backend: Backend, markers_dir: Path, tmp_path: Path
) -> None:
    project = make_project(tmp_path)
    backend = sqlite_backend
    [job_id] = backend.queue.push(jobs.SlowRecord, args=[str(markers_dir), "job", 60])

    with workers() as started:
        worker = start_worker(
            project, backend_env(project, backend), "--grace", "60", "--sleep", "0.05"
        )
        started.append(worker)
        wait_until(lambda: jobs.markers(markers_dir, "job", "started"), 20, "the job never began")
        worker.signal(signal.SIGTERM)
        wait_until(lambda: "SIGTERM received" in worker.errors(), 10, "the first SIGTERM was lost")
        worker.signal(signal.SIGTERM)
        status = worker.wait(timeout=10)

    assert status != 0
    assert "second SIGTERM: exiting now" in worker.errors()
    assert jobs.markers(markers_dir, "job") == []
    # Nothing is lost: the row stays leased, due again once the lease runs out.
    [row] = backend.jobs()
    assert (row.uuid, row.attempts) == (job_id, 1)
    assert row.reserved_until > time.time() * 1000


def test_concurrency_runs_several_worker_processes_over_one_queue(
    sqlite_backend: Backend, markers_dir: Path, tmp_path: Path
) -> None:
    project = make_project(tmp_path)
    backend = sqlite_backend
    backend.queue.push(
        *[
            functools.partial(jobs.record, str(markers_dir), f"{number:03d}")
            for number in range(200)
        ]
    )

    with workers() as started:
        supervisor = start_worker(
            project,
            backend_env(project, backend),
            "--concurrency",
            "3",
            "--stop-when-empty",
            "--sleep",
            "0.05",
        )
        started.append(supervisor)
        assert supervisor.wait(timeout=60) == 0, supervisor.errors()

    assert jobs.runs_by_name(markers_dir) == {f"{number:03d}": 1 for number in range(200)}
    output = supervisor.output()
    assert output.count(" on database, queues: default (supervised as worker ") == 3
    # Every job line and summary says which of the three workers printed it.
    numbered = re.findall(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  worker ([123])  ", output, re.M)
    assert len(numbered) == 200 + 3, output
    assert set(numbered) == {"1", "2", "3"}
    assert backend.jobs() == []


def postgresql_version() -> str:
    """The version folder of the local PostgreSQL cluster, or skip when it cannot be restarted."""
    folder = Path("/etc/postgresql")
    if shutil.which("pg_ctlcluster") is None or not folder.is_dir():
        pytest.skip("pg_ctlcluster is not installed: cannot restart PostgreSQL here")
    versions = sorted(path.name for path in folder.iterdir() if (path / "main").is_dir())
    if not versions:
        pytest.skip("no PostgreSQL cluster named main in /etc/postgresql")
    return versions[-1]


def postgresql_answers(url: str) -> bool:
    """Say whether PostgreSQL accepts a query again."""
    try:
        with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def test_a_postgresql_restart_under_a_running_worker_loses_and_repeats_nothing(
    markers_dir: Path, tmp_path: Path
) -> None:
    with open_backend("postgresql", tmp_path, retry_after=RETRY_AFTER) as backend:
        version = postgresql_version()
        project = make_project(tmp_path, retry_after=5)
        before = [f"before-{number:02d}" for number in range(30)]
        after = [f"after-{number:02d}" for number in range(30)]
        backend.queue.push(
            *[
                functools.partial(jobs.sleep_then_record, str(markers_dir), name, 0.1)
                for name in before
            ]
        )

        with workers() as started:
            worker = start_worker(project, backend_env(project, backend), "--sleep", "0.05")
            started.append(worker)
            wait_until(
                lambda: len(jobs.markers(markers_dir)) >= 5, 30, "the worker never got going"
            )
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                check=True,
                capture_output=True,
                timeout=120,
            )
            wait_until(lambda: postgresql_answers(backend.url), 60, "PostgreSQL did not come back")
            backend.queue.push(
                *[
                    functools.partial(jobs.sleep_then_record, str(markers_dir), name, 0.01)
                    for name in after
                ]
            )
            wait_until(
                lambda: len(jobs.markers(markers_dir)) >= 60 and not backend.jobs(),
                120,
                "the worker did not run every job after the restart",
                interval=0.2,
            )
            worker.signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0, worker.errors()

        assert jobs.runs_by_name(markers_dir) == {name: 1 for name in before + after}
        assert "unavailable" in worker.errors(), "the worker never saw the database go away"
        assert backend.failures() == []
