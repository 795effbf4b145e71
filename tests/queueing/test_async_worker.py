"""A worker runs many async jobs at once on its event loop, with every guarantee per job.

In process: 200 jobs that can only end once 10 of them run at the same time
finish under `async_concurrency=10`, on each database engine and on amqp.
With `craft queue:work` processes: a SIGKILL with 10 async jobs in flight
loses none of them, SIGTERM acknowledges the finished ones and puts the
unfinished back without spending their attempt, and `--timeout` cancels a
job that awaits for ever.
"""

from __future__ import annotations

import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from container import Container
from queueing import JobRunner, Queue, Signer
from queueing.drivers.amqp import AmqpDriver
from queueing.worker import Worker, WorkerOptions
from tests.database_fixtures import (
    ENGINES,
    backend_env,
    make_project,
    new_key,
    open_backend,
    start_worker,
    wait_until,
    workers,
)
from tests.queueing import jobs_for_coroutines as jobs
from tests.queueing.coroutine_support import NoFailures, delete_amqp_queues
from tests.queueing.drivers import jobs_for_database as database_jobs
from tests.services import require

COUNT = 200
AT_ONCE = 10


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def run(driver: Any, runner: JobRunner, queues: list[str], count: int) -> list[str]:
    output: list[str] = []
    Worker(
        driver,
        runner,
        WorkerOptions(
            queues=queues, sleep=0.05, max_jobs=count, async_concurrency=AT_ONCE, quiet=True
        ),
        output=output.append,
        errors=output.append,
    ).run()
    return output


@pytest.mark.parametrize("engine", ENGINES)
def test_200_async_jobs_that_need_10_running_at_once_all_finish_on_a_database_worker(
    engine: str, tmp_path: Path
) -> None:
    log = tmp_path / "log.txt"
    meeting = uuid.uuid4().hex
    with open_backend(engine, tmp_path) as backend:
        backend.queue.push(*[jobs.Rendezvous] * COUNT, args=[str(log), AT_ONCE, meeting])

        run(backend.driver, backend.runner, ["default"], COUNT)

        assert lines(log) == ["met"] * COUNT
        assert backend.jobs() == [] and backend.failures() == []


def test_200_async_jobs_that_need_10_running_at_once_all_finish_on_an_amqp_worker(
    tmp_path: Path,
) -> None:
    require("rabbitmq")
    log = tmp_path / "log.txt"
    meeting = uuid.uuid4().hex
    name = f"test-async-worker-{uuid.uuid4().hex[:12]}"
    driver = AmqpDriver(queue=name)
    signer = Signer(new_key())
    try:
        Queue({"amqp": lambda: driver}, "amqp", signer).push(
            *[jobs.Rendezvous] * COUNT, args=[str(log), AT_ONCE, meeting]
        )

        output = run(driver, JobRunner(Container(), signer, NoFailures()), [name], COUNT)

        assert lines(log) == ["met"] * COUNT, output[-5:]
    finally:
        driver.close()
        delete_amqp_queues(name, f"{name}.suspects")


# Worker processes ---------------------------------------------------------------------


def test_a_worker_killed_with_10_async_jobs_in_flight_loses_none_of_them(
    tmp_path: Path,
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    with open_backend("sqlite", tmp_path) as backend:
        project = make_project(tmp_path, retry_after=2)
        environment = backend_env(project, backend)
        names = [f"job-{number}" for number in range(AT_ONCE)]
        for name in names:
            backend.queue.push(jobs.HangsOnFirstRun, args=[str(markers), name])

        with workers() as started:
            first = start_worker(project, environment, "--sleep", "0.05")
            started.append(first)
            wait_until(
                lambda: len(list(markers.glob("*.started"))) == AT_ONCE,
                30,
                "the 10 async jobs never ran at once",
            )
            first.signal(signal.SIGKILL)
            first.wait(timeout=10)
            # A process manager would start the next worker at once; it finds the
            # jobs once the dead worker's leases run out.
            wait_until(
                lambda: all(row.reserved_until / 1000 <= time.time() for row in backend.jobs()),
                30,
                "the dead worker's leases never ran out",
            )

            second = start_worker(project, environment, "--sleep", "0.05", "--stop-when-empty")
            started.append(second)
            assert second.wait(timeout=60) == 0, second.errors()

        assert sorted(lines(markers / "ran.txt")) == sorted(names)
        assert backend.jobs() == [] and backend.failures() == []


def test_sigterm_acknowledges_finished_async_jobs_and_puts_back_the_rest_unspent(
    tmp_path: Path,
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    with open_backend("sqlite", tmp_path) as backend:
        project = make_project(tmp_path)
        environment = backend_env(project, backend)
        hanging = [f"hangs-{number}" for number in range(3)]
        quick = [f"quick-{number}" for number in range(3)]
        for name in hanging:
            backend.queue.push(jobs.HangsOnFirstRun, args=[str(markers), name])
        for name in quick:
            backend.queue.push(jobs.QuickAsync, args=[str(markers), name])

        with workers() as started:
            worker = start_worker(project, environment, "--sleep", "0.05", "--grace", "0.5")
            started.append(worker)
            wait_until(
                lambda: (
                    len(lines(markers / "ran.txt")) == len(quick)
                    and len(list(markers.glob("*.started"))) == len(hanging)
                ),
                30,
                "the jobs did not all start",
            )
            worker.signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0, worker.errors()

        assert sorted(lines(markers / "ran.txt")) == sorted(quick)
        rows = backend.jobs()
        assert len(rows) == len(hanging)
        assert [(row.attempts, row.reserved_by) for row in rows] == [(0, None)] * len(hanging)
        assert "released" in worker.output()


def test_timeout_cancels_an_async_job_that_awaits_for_ever_and_the_worker_goes_on(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log.txt"
    markers = tmp_path / "markers"
    markers.mkdir()
    with open_backend("sqlite", tmp_path) as backend:
        project = make_project(tmp_path)
        environment = backend_env(project, backend)
        [sleeper] = backend.queue.push(jobs.Sleeps, args=[str(log)])
        backend.queue.push(jobs.QuickAsync, args=[str(markers), "after"])

        with workers() as started:
            worker = start_worker(
                project, environment, "--sleep", "0.05", "--timeout", "0.5", "--stop-when-empty"
            )
            started.append(worker)
            assert worker.wait(timeout=60) == 0, worker.errors()

        assert lines(markers / "ran.txt") == ["after"]
        [row] = backend.failures()
        assert row.uuid == sleeper
        assert "timed out after 0.5s" in row.message


def test_sync_and_async_jobs_share_one_queue_and_all_run(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    meeting = uuid.uuid4().hex
    markers = tmp_path / "markers"
    markers.mkdir()
    with open_backend("sqlite", tmp_path) as backend:
        for number in range(AT_ONCE * 2):
            backend.queue.push(jobs.Rendezvous, args=[str(log), AT_ONCE, meeting])
            if number % 4 == 0:
                backend.queue.push(database_jobs.Record, args=[str(markers), f"sync-{number}"])

        run(backend.driver, backend.runner, ["default"], AT_ONCE * 2 + 5)

        assert lines(log) == ["met"] * AT_ONCE * 2
        assert len(database_jobs.markers(markers)) == 5
        assert backend.jobs() == [] and backend.failures() == []


def test_a_sync_job_runs_on_the_workers_thread_never_on_the_event_loop(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    threads = tmp_path / "threads.txt"
    with open_backend("sqlite", tmp_path) as backend:
        backend.queue.push(jobs.QuickAsync, args=[str(tmp_path), "async"])
        backend.queue.push(jobs.notes_its_thread, args=[str(threads)])
        backend.queue.push(jobs.QuickAsync, args=[str(tmp_path), "async-again"])

        run(backend.driver, backend.runner, ["default"], 3)

        assert lines(threads) == [threading.current_thread().name]
        assert sorted(lines(tmp_path / "ran.txt")) == ["async", "async-again"]
        assert not log.exists()
