"""Idle database workers through a lost server: they report it, reconnect and go on.

Each test starts a `craft queue:work` process on an empty queue, takes the
database away from under it (a PostgreSQL or MariaDB restart, a SQLite file
locked by another connection), brings it back, and pushes a job: the same
worker process runs it.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.database_fixtures import (
    Backend,
    backend_env,
    make_project,
    open_backend,
    start_worker,
    wait_until,
    workers,
)
from tests.queueing.drivers import jobs_for_database as jobs
from tests.services import answers, services_required

POSTGRESQL_VERSION = next(iter(sorted(path.name for path in Path("/etc/postgresql").glob("*"))), "")


def restart_postgresql() -> None:
    """Restart the local PostgreSQL cluster and wait until it accepts connections."""
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", POSTGRESQL_VERSION, "main", "restart"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    wait_until(lambda: answers("postgresql"), 60, "PostgreSQL did not come back")


def restart_mariadb() -> None:
    """Shut MariaDB down, start it again as CI does, and wait until it answers."""
    subprocess.run(
        ["mysqladmin", "-uroot", "-h127.0.0.1", "shutdown"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    # The port closes before the process is gone, and a start while it still
    # runs does nothing.
    wait_until(lambda: not _running("mariadbd"), 60, "MariaDB did not stop")
    subprocess.run(
        [
            "start-stop-daemon",
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            "/usr/sbin/mariadbd",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    wait_until(lambda: answers("mariadb"), 60, "MariaDB did not come back")


def _running(program: str) -> bool:
    found = subprocess.run(["pgrep", "-x", program], capture_output=True, timeout=10)
    return found.returncode == 0


RESTARTS = {"postgresql": restart_postgresql, "mariadb": restart_mariadb}
TOOLS = {"postgresql": "pg_ctlcluster", "mariadb": "mysqladmin"}


@pytest.fixture(params=sorted(RESTARTS))
def server_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Empty tables on a server this machine can restart."""
    if shutil.which(TOOLS[request.param]) is None:
        reason = f"{TOOLS[request.param]} is not installed, so the server cannot be restarted"
        if services_required():
            pytest.fail(f"{reason}, and QUEUE_REQUIRE_SERVICES=1 requires it", pytrace=False)
        pytest.skip(reason)
    with open_backend(request.param, tmp_path) as backend:
        yield backend


def test_an_idle_worker_survives_a_server_restart_and_runs_a_job_pushed_after_it(
    server_backend: Backend, markers_dir: Path, tmp_path: Path
) -> None:
    backend = server_backend
    project = make_project(tmp_path)
    environment = backend_env(project, backend)

    with workers() as started:
        worker = start_worker(project, environment, "--sleep", "0.2")
        started.append(worker)
        wait_until(lambda: "worker" in worker.output(), 30, "the worker never started")
        backend.connections.close()  # the test's own pool must not hold dead connections

        RESTARTS[backend.engine_name]()

        assert worker.process.poll() is None, worker.errors()
        [job_id] = wait_until(
            lambda: _push_once_reachable(backend, markers_dir), 60, "could not push after restart"
        )
        wait_until(lambda: jobs.markers(markers_dir, "after"), 60, "the job pushed after never ran")
        assert worker.process.poll() is None, worker.errors()

    assert "unavailable" in worker.errors()
    assert f"{job_id[:12]}  default  done" in worker.output()


def _push_once_reachable(backend: Backend, markers_dir: Path) -> list[str] | None:
    try:
        return backend.queue.push(jobs.Record, args=[str(markers_dir), "after"])
    except Exception:
        backend.connections.close()
        return None


def test_an_idle_sqlite_worker_waits_out_a_locked_database_and_runs_the_next_job(
    tmp_path: Path, markers_dir: Path
) -> None:
    with open_backend("sqlite", tmp_path) as backend:
        project = make_project(tmp_path)
        environment = backend_env(project, backend)
        database = backend.url.removeprefix("sqlite:///")
        with workers() as started:
            worker = start_worker(project, environment, "--sleep", "0.2")
            started.append(worker)
            wait_until(lambda: "worker" in worker.output(), 30, "the worker never started")

            locker = sqlite3.connect(database, isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")
            try:
                wait_until(
                    lambda: "unavailable" in worker.errors(), 60, "the worker never saw the lock"
                )
                assert worker.process.poll() is None, worker.errors()
            finally:
                locker.execute("ROLLBACK")
                locker.close()

            [job_id] = backend.queue.push(jobs.Record, args=[str(markers_dir), "after"])
            wait_until(lambda: jobs.markers(markers_dir, "after"), 60, "the job never ran")
            assert worker.process.poll() is None, worker.errors()

        assert f"{job_id[:12]}  default  done" in worker.output()
