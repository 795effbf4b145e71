"""`async def` jobs are awaited on every driver, never reported done without running.

Every kind of async job (an `async def handle`, an `async def` function, an
async bound method, an async closure, a `functools.partial` of one) runs once
with its arguments on the sync, async, database (SQLite, PostgreSQL, MariaDB)
and amqp drivers, and leaves its line; constructor and `handle` injection
work as for sync jobs. An async job that raises is retried, its async
`failed()` awaited once, its row stored. Pushing a coroutine object is
refused at push.
"""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import uuid
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from container import Container
from queueing import Envelope, JobRunner, Outcome, Queue, Result, Signer
from queueing.drivers import AsyncDriver, SyncDriver
from queueing.drivers.amqp import AmqpDriver
from queueing.payload import seal
from queueing.worker import Worker, WorkerOptions
from tests.database_fixtures import ENGINES, new_key, open_backend
from tests.queueing import jobs_for_coroutines as jobs
from tests.queueing.coroutine_support import NoFailures, delete_amqp_queues
from tests.services import require

KINDS = jobs.kinds()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def container() -> Container:
    made = Container()
    made.instance(jobs.Greeting, jobs.Greeting())
    return made


def work_until_empty(driver: Any, runner: JobRunner, queues: list[str], jobs_count: int) -> None:
    Worker(
        driver,
        runner,
        WorkerOptions(queues=queues, sleep=0.02, max_jobs=jobs_count, stop_when_empty=True),
        output=lambda line: None,
        errors=lambda line: None,
    ).run()


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "log.txt"


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("driver_name", ["sync", "async"])
def test_an_async_job_is_awaited_on_the_in_process_drivers(
    kind: str, driver_name: str, log: Path
) -> None:
    signer = Signer(new_key())
    runner = JobRunner(container(), signer, NoFailures())
    driver: Any = SyncDriver(runner) if driver_name == "sync" else AsyncDriver(runner)
    job, expected = KINDS[kind]
    try:
        Queue({driver_name: lambda: driver}, driver_name, signer).push(job, args=[str(log), "ada"])
        if driver_name == "async":
            assert driver.drain(30)
    finally:
        driver.close()

    assert lines(log) == [expected]


@pytest.mark.parametrize("engine", ENGINES)
def test_every_kind_of_async_job_is_awaited_by_a_database_worker(
    engine: str, tmp_path: Path, log: Path
) -> None:
    with open_backend(engine, tmp_path) as backend:
        runner = JobRunner(container(), backend.runner.signer, backend.store)
        for job, _expected in KINDS.values():
            backend.queue.push(job, args=[str(log), "ada"])

        work_until_empty(backend.driver, runner, ["default"], len(KINDS))

        assert sorted(lines(log)) == sorted(expected for _job, expected in KINDS.values())
        assert backend.jobs() == [] and backend.failures() == []


def test_every_kind_of_async_job_is_awaited_by_an_amqp_worker(log: Path) -> None:
    require("rabbitmq")
    name = f"test-coroutines-{uuid.uuid4().hex[:12]}"
    driver = AmqpDriver(queue=name, prefetch=10)
    signer = Signer(new_key())
    try:
        queue = Queue({"amqp": lambda: driver}, "amqp", signer)
        for job, _expected in KINDS.values():
            queue.push(job, args=[str(log), "ada"])

        work_until_empty(driver, JobRunner(container(), signer, NoFailures()), [name], len(KINDS))

        assert sorted(lines(log)) == sorted(expected for _job, expected in KINDS.values())
    finally:
        driver.close()
        delete_amqp_queues(name, f"{name}.suspects")


def test_an_async_job_that_raises_is_retried_then_its_async_failed_is_awaited_once(
    tmp_path: Path, log: Path
) -> None:
    with open_backend("sqlite", tmp_path) as backend:
        runner = JobRunner(container(), backend.runner.signer, backend.store)
        [job_id] = backend.queue.push(jobs.AsyncFails, args=[str(log)])

        work_until_empty(backend.driver, runner, ["default"], 3)

        assert lines(log) == ["attempt"] * 3 + ["failed: the async job failed"]
        [row] = backend.failures()
        assert (row.uuid, row.attempts, row.exception_type) == (job_id, 3, "RuntimeError")


def test_a_sync_push_of_an_async_job_works_from_inside_a_running_event_loop(log: Path) -> None:
    signer = Signer(new_key())
    runner = JobRunner(container(), signer, NoFailures())
    queue = Queue({"sync": lambda: SyncDriver(runner)}, "sync", signer)

    async def route() -> None:
        queue.push(jobs.async_function, args=[str(log), "from a loop"])

    asyncio.run(route())

    assert lines(log) == ["function from a loop"]


def test_pushing_a_coroutine_object_is_refused_and_leaves_no_warning() -> None:
    signer = Signer(new_key())
    runner = JobRunner(container(), signer, NoFailures())
    queue = Queue({"sync": lambda: SyncDriver(runner)}, "sync", signer)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="push the function, not the coroutine it returned"):
            queue.push(jobs.async_function("unused", "never"))
        gc.collect()


# Pushing from async code -------------------------------------------------------------


def test_apush_returns_the_ids_and_queues_like_push(tmp_path: Path, log: Path) -> None:
    with open_backend("sqlite", tmp_path) as backend:
        ids = asyncio.run(backend.queue.apush(jobs.async_function, args=[str(log), "ada"]))

        assert [row.uuid for row in backend.jobs()] == ids
        with pytest.raises(ValueError, match="49 days"):
            asyncio.run(backend.queue.apush(jobs.async_function, wait="50 days"))
        assert len(backend.jobs()) == 1


def test_apush_leaves_the_event_loop_running_while_the_database_is_locked(
    tmp_path: Path, log: Path
) -> None:
    """The lock is only released by a task ticking on the loop: a blocked loop never ends."""
    with open_backend("sqlite", tmp_path) as backend:
        database = backend.url.removeprefix("sqlite:///")
        locker = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        locker.execute("BEGIN EXCLUSIVE")
        ticks: list[int] = []

        async def tick_then_unlock() -> None:
            while len(ticks) < 5:
                ticks.append(len(ticks))
                await asyncio.sleep(0.01)
            locker.execute("ROLLBACK")

        async def main() -> list[str]:
            ticker = asyncio.create_task(tick_then_unlock())
            ids = await backend.queue.apush(jobs.async_function, args=[str(log), "ada"])
            await ticker
            return ids

        try:
            ids = asyncio.run(main())
        finally:
            locker.close()

        assert ticks == [0, 1, 2, 3, 4]
        assert [row.uuid for row in backend.jobs()] == ids


# On a worker's event loop --------------------------------------------------------------


def test_on_an_event_loop_a_timeout_cancels_the_job_and_fails_the_attempt(
    signer_and_runner: tuple[Signer, JobRunner], log: Path
) -> None:
    signer, runner = signer_and_runner
    envelope = _envelope(signer, jobs.Sleeps, [str(log)])
    prepared = runner.prepare(envelope)
    assert not isinstance(prepared, Result) and prepared.is_async

    result = asyncio.run(runner.finish_async(prepared, timeout=0.05))

    assert result.outcome is Outcome.FAILED
    assert result.error_text == "TimeoutError: job timed out after 0.05s"
    assert lines(log) == ["started"]


def test_on_an_event_loop_an_async_failed_is_awaited_there_once(
    signer_and_runner: tuple[Signer, JobRunner], log: Path
) -> None:
    signer, runner = signer_and_runner
    envelope = replace(_envelope(signer, jobs.AsyncFails, [str(log)]), attempts=3)

    async def on_the_loop() -> Result:
        prepared = runner.prepare(envelope)
        assert not isinstance(prepared, Result)
        result = await runner.finish_async(prepared)
        await runner.callbacks_done()
        return result

    result = asyncio.run(on_the_loop())

    assert result.outcome is Outcome.FAILED
    assert lines(log) == ["attempt", "failed: the async job failed"]


@pytest.fixture
def signer_and_runner() -> tuple[Signer, JobRunner]:
    signer = Signer(new_key())
    return signer, JobRunner(container(), signer, _Keep())


class _Keep:
    def __init__(self) -> None:
        self.failures: list[Any] = []

    def store(self, failure: Any) -> None:
        self.failures.append(failure)


def _envelope(signer: Signer, job: Any, args: list[Any]) -> Envelope:
    envelope = seal(
        signer,
        job,
        args=tuple(args),
        kwargs={},
        callback="handle",
        queue="default",
        driver="test",
        now=0.0,
        delay=0.0,
    )
    return envelope.started()


def test_a_job_that_swallows_its_timeout_cancellation_is_still_failed_as_timed_out(
    signer_and_runner: tuple[Signer, JobRunner], log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    signer, runner = signer_and_runner
    prepared = runner.prepare(_envelope(signer, jobs.SwallowsCancel, [str(log)]))
    assert not isinstance(prepared, Result)

    result = asyncio.run(runner.finish_async(prepared, timeout=0.05))

    assert lines(log) == ["swallowed"]
    assert result.outcome is Outcome.FAILED
    assert result.error_text == "TimeoutError: job timed out after 0.05s"
    assert "swallowed its cancellation" in caplog.text


def test_a_plain_function_whose_result_is_awaitable_is_awaited(log: Path) -> None:
    signer = Signer(new_key())
    runner = JobRunner(container(), signer, NoFailures())
    queue = Queue({"sync": lambda: SyncDriver(runner)}, "sync", signer)

    queue.push(jobs.returns_a_coroutine, args=[str(log), "ada"])

    assert lines(log) == ["function ada"]


def test_an_async_driver_push_from_inside_a_running_event_loop_runs_the_async_job(
    log: Path,
) -> None:
    signer = Signer(new_key())
    runner = JobRunner(container(), signer, NoFailures())
    driver = AsyncDriver(runner)
    queue = Queue({"async": lambda: driver}, "async", signer)

    async def route() -> None:
        queue.push(jobs.async_function, args=[str(log), "from a loop"])

    try:
        asyncio.run(route())
        assert driver.drain(30)
    finally:
        driver.close()

    assert lines(log) == ["function from a loop"]
