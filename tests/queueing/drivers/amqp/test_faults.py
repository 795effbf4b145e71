"""Faults on the `amqp` driver: jobs that kill their worker, broker restarts, forged ids.

Every test works on queues of its own (random names) and deletes them after.
Workers are real `craft queue:work --driver amqp` processes in a copy of the
project (`make_project`) whose failed jobs go to its SQLite file; the other
fixtures come from this folder's conftest, `markers_dir` from the one above.
"""

from __future__ import annotations

import secrets
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pika.exceptions
import pytest
from sqlalchemy import create_engine, delete, select
from sqlalchemy.engine import Engine

from container import Container
from queueing import JobRunner, Queue, Signer
from queueing.connections import Connections
from queueing.drivers.amqp import AmqpDriver, suspects_queue_name
from queueing.failed import DatabaseFailedJobStore
from queueing.payload import MAGIC
from queueing.schema import failed_jobs, metadata
from queueing.worker import Worker, WorkerOptions
from tests.database_fixtures import (
    WorkerProcess,
    engine_url,
    make_project,
    project_env,
    rows,
    start_worker,
    wait_until,
)
from tests.queueing import jobs_for_coroutines as coroutine_jobs
from tests.queueing.coroutine_support import NoFailures
from tests.queueing.drivers import jobs_for_amqp as jobs
from tests.queueing.drivers import jobs_for_amqp_faults as faults
from tests.queueing.drivers import jobs_for_database as database_jobs
from tests.queueing.drivers.amqp.support import Broker, rabbitmqctl, reserve
from tests.services import require

# A worker that dies is started again, up to this many times in all.
WORKER_STARTS = 10


class FaultsBroker(Broker):
    """The shared broker view, also cleaning up suspects queues and counting a missing queue as 0.

    Workers here die at any moment, so a suspects queue may or may not have
    been declared when a test counts it.
    """

    def name(self) -> str:
        """Return a fresh queue name; it, its suspects and its holding queues go at the end."""
        name = f"test-amqp-faults-{uuid.uuid4().hex[:12]}"
        self.names |= {name, suspects_queue_name(name)}
        return name

    def ready(self, queue: str) -> int:
        """Return the ready messages of `queue` (0 when it does not exist)."""
        try:
            return super().ready(queue)
        except pika.exceptions.ChannelClosedByBroker:
            return 0


@pytest.fixture
def broker() -> Iterator[Broker]:
    """RabbitMQ through a plain connection; the test's queues are deleted after."""
    require("rabbitmq")
    broker = FaultsBroker()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project for `craft` processes."""
    return make_project(tmp_path)


@pytest.fixture
def failed_engine(project: Path) -> Iterator[Engine]:
    """The project's SQLite database, where workers store failed jobs in `failed_jobs`."""
    engine = create_engine(f"sqlite:///{project / 'storage' / 'database.sqlite'}")
    metadata.create_all(engine, tables=[failed_jobs])
    yield engine
    engine.dispose()


def work_until_clean_exit(
    project: Path, environment: dict[str, str], queue: str
) -> list[WorkerProcess]:
    """Run `craft queue:work --stop-when-empty` on `queue`, again each time it dies.

    Returns the workers started, the last of which exited 0 (the test fails
    otherwise).
    """
    started: list[WorkerProcess] = []
    for _ in range(WORKER_STARTS):
        worker = start_worker(
            project, environment, "--driver", "amqp", "--channel", queue, "--stop-when-empty"
        )
        started.append(worker)
        try:
            status = worker.wait(timeout=30)
        finally:
            worker.kill()
        if status == 0:
            return started
    last = started[-1]
    raise AssertionError(
        f"the worker died {WORKER_STARTS} times; the last one said:\n{last.output()}{last.errors()}"
    )


# Jobs that kill their worker ----------------------------------------------------------------


@pytest.mark.parametrize("prefetch", ["100", "1"])
def test_a_job_killing_its_worker_is_failed_after_3_deaths_and_the_5_behind_it_run_once(
    prefetch: str,
    queue: Queue,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
    project: Path,
    failed_engine: Engine,
    key: str,
) -> None:
    [poison_id] = queue.push(faults.KillsWorker, args=[str(markers_dir), "poison"])
    queue.push(*[jobs.Numbered(number) for number in range(5)], args=[str(markers_dir)])

    environment = project_env(project, key, QUEUE_AMQP_PREFETCH=prefetch)
    started = work_until_clean_exit(project, environment, queue_name)

    assert len(jobs.markers(markers_dir, "poison", "started")) == 3
    assert len(started) == 4
    assert jobs.runs_by_name(markers_dir) == {f"n{number}": 1 for number in range(5)}
    [failure] = rows(failed_engine, failed_jobs)
    assert (failure.uuid, failure.reason, failure.attempts) == (poison_id, "died", 3)
    assert "the worker died while running it" in failure.message, failure.message
    assert broker.ready(queue_name) == broker.ready(suspects_queue_name(queue_name)) == 0


def test_a_plain_function_killing_its_worker_runs_once_more_alone_then_is_failed(
    queue: Queue,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
    project: Path,
    failed_engine: Engine,
    key: str,
) -> None:
    [function_id] = queue.push(faults.kill_worker, args=[str(markers_dir), "function"])
    queue.push(jobs.Record, args=[str(markers_dir), "after"])

    started = work_until_clean_exit(project, project_env(project, key), queue_name)

    # Its first death cannot be told from sitting in a dead worker's prefetch;
    # alone, it dies for certain, and both deaths count: it never runs a third time.
    assert len(jobs.markers(markers_dir, "function", "started")) == 2
    assert len(started) == 3
    assert len(jobs.markers(markers_dir, "after")) == 1
    [failure] = rows(failed_engine, failed_jobs)
    assert (failure.uuid, failure.name, failure.reason) == (
        function_id,
        "tests.queueing.drivers.jobs_for_amqp_faults.kill_worker",
        "died",
    )
    assert "the worker died while running it" in failure.message, failure.message
    assert broker.ready(queue_name) == broker.ready(suspects_queue_name(queue_name)) == 0


def test_jobs_prefetched_behind_a_job_killing_its_worker_keep_their_attempts(
    queue: Queue,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
    project: Path,
    failed_engine: Engine,
    key: str,
) -> None:
    broker.delayed(queue_name, faults.FailsOnce.retry_delay)
    [poison_id] = queue.push(faults.KillsWorker, args=[str(markers_dir), "poison"])
    queue.push(faults.OneAttempt, args=[str(markers_dir), "single"])
    queue.push(faults.FailsOnce, args=[str(markers_dir), "retried"])

    work_until_clean_exit(project, project_env(project, key), queue_name)

    # One attempt, and it runs; two attempts, and the second one runs after the first failed.
    assert len(jobs.markers(markers_dir, "single")) == 1
    assert len(jobs.markers(markers_dir, "retried", "attempt")) == 2
    assert len(jobs.markers(markers_dir, "retried")) == 1
    assert [failure.uuid for failure in rows(failed_engine, failed_jobs)] == [poison_id]


def test_reserve_counts_the_deaths_of_the_job_in_hand_and_not_of_those_prefetched(
    drivers: Callable[..., AmqpDriver],
    queue: Queue,
    broker: Broker,
    queue_name: str,
) -> None:
    [poison_id] = queue.push(jobs.Numbered(0), args=["/nowhere"])
    others = set(queue.push(*[jobs.Numbered(number) for number in range(1, 6)], args=["/nowhere"]))

    def next_worker_until_poison() -> tuple[AmqpDriver, int, dict[str, int]]:
        """A new worker acknowledges every other job it is handed until it holds the poison."""
        driver = drivers(queue=queue_name, prefetch=10)
        seen: dict[str, int] = {}
        while True:
            held = reserve(driver, queue_name)
            if held.envelope.id == poison_id:
                return driver, held.envelope.attempts, seen
            seen[held.envelope.id] = held.envelope.attempts
            assert driver.acknowledge(held)

    first, attempts, _ = next_worker_until_poison()
    assert attempts == 1
    wait_until(lambda: broker.ready(queue_name) == 0, 5, "the worker did not prefetch all 6")
    first.close()  # it dies with the poison in hand and 5 jobs prefetched

    # Alone, with its first death unconfirmed: nothing else is held while it runs.
    second, attempts, _ = next_worker_until_poison()
    assert attempts == 1
    wait_until(
        lambda: broker.ready(queue_name) + broker.ready(suspects_queue_name(queue_name)) == 5,
        5,
        "the worker running a suspect holds other messages",
    )
    second.close()

    third, attempts, ran = next_worker_until_poison()
    assert attempts == 3
    assert ran == dict.fromkeys(others, 1)
    third.close()

    _, attempts, ran = next_worker_until_poison()
    assert (attempts, ran) == (4, {})


def test_a_job_caught_in_hand_by_two_kills_after_one_in_a_killed_prefetch_is_stored_not_lost(
    drivers: Callable[..., AmqpDriver],
    queue: Queue,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
    storing_runner: JobRunner,
    sqlite_failed_store: DatabaseFailedJobStore,
) -> None:
    # What the kill storm's "never ran" was: the job sat prefetched behind
    # another one when a worker was killed (an unconfirmed death), then was in
    # hand alone at two more kills. Those cannot be told from a poison job's
    # deaths, so the job is failed as died, and stored: not stranded in a queue.
    [first_id, caught_id] = queue.push(
        *[jobs.Numbered(number) for number in range(2)], args=[str(markers_dir)]
    )

    def take_until_caught(driver: AmqpDriver) -> int:
        """Acknowledge every other job `driver` is handed; return the attempts of the caught one."""
        while (held := reserve(driver, queue_name)).envelope.id != caught_id:
            assert driver.acknowledge(held)
        return held.envelope.attempts

    killed = drivers(queue=queue_name, prefetch=10)
    assert reserve(killed, queue_name).envelope.id == first_id
    wait_until(lambda: broker.ready(queue_name) == 0, 5, "the worker did not prefetch both")
    killed.close()  # it dies with the first job in hand, the caught one prefetched
    for attempts in (1, 3):
        caught_in_hand = drivers(queue=queue_name)
        assert take_until_caught(caught_in_hand) == attempts
        caught_in_hand.close()

    engine = sqlite_failed_store.engine
    Worker(
        drivers(queue=queue_name),
        storing_runner,
        WorkerOptions(queues=[queue_name], stop_when_empty=True, sleep=0.05, quiet=True),
        output=lambda _line: None,
        errors=lambda _line: None,
    ).run()

    [failure] = rows(engine, failed_jobs)
    assert (failure.uuid, failure.reason, failure.attempts) == (caught_id, "died", 3)
    assert jobs.runs_by_name(markers_dir) == {}  # the caught job never ran, yet is kept
    assert broker.ready(queue_name) == broker.ready(suspects_queue_name(queue_name)) == 0


# Broker restarts and forged messages --------------------------------------------------------


def test_an_idle_worker_survives_a_broker_restart_and_runs_a_job_pushed_after_it(
    queue: Queue,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
    project: Path,
    key: str,
) -> None:
    rabbitmqctl("status")
    worker = start_worker(
        project,
        project_env(project, key),
        "--driver",
        "amqp",
        "--channel",
        queue_name,
        "--sleep",
        "0.2",
    )
    try:
        wait_until(lambda: "worker" in worker.output() + worker.errors(), 30, "no worker started")
        try:
            rabbitmqctl("stop_app")
        finally:
            rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
        wait_until(broker.answers, 60, "RabbitMQ did not come back")

        queue.push(jobs.Record, args=[str(markers_dir), "after-restart"])

        wait_until(
            lambda: jobs.markers(markers_dir, "after-restart"),
            30,
            "the idle worker did not run the job pushed after the restart",
        )
        assert worker.process.poll() is None
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0, worker.errors()
    finally:
        worker.kill()


@pytest.mark.parametrize("engine_name", ["sqlite", "postgresql"])
def test_a_forged_message_with_a_255_character_id_is_stored_as_refused_and_acknowledged(
    engine_name: str,
    drivers: Callable[..., AmqpDriver],
    broker: Broker,
    queue_name: str,
    key: str,
    tmp_path: Path,
) -> None:
    # 255 bytes is the longest `message_id` AMQP carries, far longer than the id column.
    claimed = "forged-" + "x" * 248
    body = MAGIC + secrets.token_bytes(32) + b"not ours"
    broker.publish(queue_name, body, message_id=claimed, type="evil.Job")
    connections = Connections({"failed": engine_url(engine_name, tmp_path)}, "failed")
    engine = connections.engine("failed")
    metadata.create_all(engine, tables=[failed_jobs])
    driver = drivers(queue=queue_name)
    runner = JobRunner(Container(), Signer(key), DatabaseFailedJobStore(connections, "failed"))
    mine = failed_jobs.c.queue == queue_name
    try:
        Worker(
            driver,
            runner,
            WorkerOptions(queues=[queue_name], max_jobs=1, sleep=0.05, quiet=True),
            output=lambda _line: None,
            errors=lambda _line: None,
        ).run()
        with engine.begin() as connection:
            stored = connection.execute(select(failed_jobs).where(mine)).all()
            connection.execute(delete(failed_jobs).where(mine))
    finally:
        connections.close()

    [record] = stored
    assert (record.name, record.reason) == ("evil.Job", "signature")
    assert claimed in record.message
    driver.close()
    assert broker.ready(queue_name) == 0


def test_a_copy_delivered_again_after_its_failure_was_stored_does_not_fail_twice(
    drivers: Callable[..., AmqpDriver],
    queue: Queue,
    broker: Broker,
    queue_name: str,
    storing_runner: JobRunner,
    sqlite_failed_store: DatabaseFailedJobStore,
    tmp_path: Path,
) -> None:
    journal = tmp_path / "failed-calls.txt"
    [job_id] = queue.push(database_jobs.ExplodeAndNote, args=[str(journal)])
    runner, store, engine = storing_runner, sqlite_failed_store, sqlite_failed_store.engine

    # The failure is stored, then the delivery is lost before its acknowledgement.
    lost = drivers(queue=queue_name)
    result = runner.attempt(reserve(lost, queue_name).envelope)
    assert result.failure is not None
    store.store(result.failure)
    lost.close()

    lines: list[str] = []
    Worker(
        drivers(queue=queue_name),
        runner,
        WorkerOptions(queues=[queue_name], stop_when_empty=True, sleep=0.05),
        output=lines.append,
        errors=lines.append,
    ).run()

    assert journal.read_text().splitlines() == ["failed() called"]
    [failure] = rows(engine, failed_jobs)
    assert (failure.uuid, failure.reason) == (job_id, "failed")
    assert any("stored already" in line for line in lines), lines
    assert broker.ready(queue_name) == 0
    assert broker.ready(suspects_queue_name(queue_name)) == 0


def test_an_amqp_worker_closes_each_jobs_scoped_service(
    drivers: Callable[..., AmqpDriver], queue: Queue, queue_name: str, key: str, tmp_path: Path
) -> None:
    log = tmp_path / "log.txt"
    container = Container()
    container.scoped(coroutine_jobs.Session)
    coroutine_jobs.Session.opened.clear()
    queue.push(coroutine_jobs.UsesSession, coroutine_jobs.UsesSession, args=[str(log)])

    Worker(
        drivers(queue=queue_name),
        JobRunner(container, Signer(key), NoFailures()),
        WorkerOptions(queues=[queue_name], max_jobs=2, sleep=0.05, quiet=True),
        output=lambda _line: None,
        errors=lambda _line: None,
    ).run()

    assert log.read_text().splitlines() == ["same=True open=True"] * 2
    assert len(coroutine_jobs.Session.opened) == 2
    assert all(session.closed for session in coroutine_jobs.Session.opened)
