"""The driver as operators meet it: errors, counts, clearing, failed jobs, broker restarts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from queueing import JobRunner, Outcome, Queue
from queueing.drivers.amqp import (
    AmqpDriver,
    AmqpUnavailableError,
)
from queueing.failed import DatabaseFailedJobStore
from queueing.operations import retry_failed
from tests.queueing.drivers import jobs_for_amqp as jobs
from tests.queueing.drivers.amqp.support import (
    Broker,
    WorkerProcess,
    craft,
    craft_environment,
    queue_on,
    rabbitmqctl,
    reserve,
    wait_until,
    work,
)


def test_an_unreachable_broker_raises_a_clear_error_on_push_and_reserve(
    drivers: Callable[..., AmqpDriver], key: str
) -> None:
    driver = drivers(port=1, connection_attempts=1, publish_attempts=2)
    queue = queue_on(driver, key)

    with pytest.raises(AmqpUnavailableError, match=r"cannot reach RabbitMQ at 127\.0\.0\.1:1/"):
        queue.push(jobs.Record, args=["/nowhere", "a"])
    with pytest.raises(AmqpUnavailableError, match=r"127\.0\.0\.1:1/"):
        driver.reserve(["default"])


def test_counts_and_clear_see_ready_and_delayed_messages(
    queue: Queue, driver: AmqpDriver, broker: Broker, queue_name: str
) -> None:
    broker.delayed(queue_name, 60)
    queue.push(jobs.Numbered(1), jobs.Numbered(2), jobs.Numbered(3), args=["/nowhere"])
    queue.push(jobs.Numbered(4), args=["/nowhere"], wait="1 minute")

    [counts] = driver.counts()
    assert (counts.queue, counts.pending, counts.delayed, counts.reserved) == (queue_name, 3, 1, 0)
    assert counts.connection == "127.0.0.1:5672/"
    assert driver.waiting([queue_name])

    assert driver.clear() == 4
    assert not driver.waiting([queue_name])
    assert driver.counts(broker.name()) == []


def test_stored_failed_jobs_go_back_on_their_amqp_queue_with_no_attempts_spent(
    queue: Queue,
    driver: AmqpDriver,
    queue_name: str,
    sqlite_failed_store: DatabaseFailedJobStore,
    storing_runner: JobRunner,
) -> None:
    [job_id] = queue.push(jobs.FailFirst, args=["/nowhere/missing", "x"])
    held = reserve(driver, queue_name)
    # As if this had been its last attempt.
    failed = storing_runner.run(replace(held.envelope, attempts=2))
    assert driver.bury(held)
    assert failed.outcome is Outcome.FAILED

    [requeued] = retry_failed(sqlite_failed_store, queue, driver="amqp")

    assert requeued.uuid == job_id
    again = reserve(driver, queue_name)
    assert (again.envelope.id, again.envelope.attempts) == (job_id, 1)
    assert again.envelope.body == held.envelope.body


def test_queue_status_counts_from_the_broker(
    queue: Queue, queue_name: str, key: str, tmp_path: Path
) -> None:
    queue.push(jobs.Numbered(1), jobs.Numbered(2), args=["/nowhere"])

    status = craft(
        craft_environment(key, tmp_path),
        "queue:status",
        "--driver",
        "amqp",
        "--channel",
        queue_name,
        "--json",
    )

    assert status.returncode == 0, status.stderr
    assert '"pending": 2' in status.stdout


def test_queue_work_failed_puts_stored_failed_amqp_jobs_back_on_their_queue(
    queue: Queue,
    driver: AmqpDriver,
    key: str,
    queue_name: str,
    markers_dir: Path,
    tmp_path: Path,
    sqlite_failed_store: DatabaseFailedJobStore,
    storing_runner: JobRunner,
) -> None:
    [job_id] = queue.push(jobs.GivesUp, args=[str(markers_dir), "doomed"])
    work(driver, storing_runner, queue_name, max_jobs=1)
    assert [stored.uuid for stored in sqlite_failed_store.all()] == [job_id]

    requeue = craft(craft_environment(key, tmp_path), "queue:work", "--driver", "amqp", "--failed")

    assert requeue.returncode == 0, requeue.stderr
    assert requeue.stdout == "put 1 failed job(s) back on their queues\n"
    assert sqlite_failed_store.all() == []
    again = reserve(driver, queue_name)
    assert (again.envelope.id, again.envelope.queue, again.envelope.attempts) == (
        job_id,
        queue_name,
        1,
    )


def test_queue_clear_on_amqp_names_the_one_queue_it_purges_and_purges_it(
    queue: Queue, broker: Broker, queue_name: str, key: str, tmp_path: Path
) -> None:
    queue.push(jobs.Numbered(1), jobs.Numbered(2), args=["/nowhere"])
    environment = craft_environment(key, tmp_path)
    arguments = ("queue:clear", "--driver", "amqp", "--channel", queue_name)

    declined = craft(environment, *arguments, answer="n\n")

    assert declined.returncode != 0
    assert (
        f"Delete the ready jobs of queue '{queue_name}' on amqp (127.0.0.1:5672/)? "
        "Delayed jobs in its holding queues are kept." in declined.stdout
    )
    assert "every queue" not in declined.stdout
    assert declined.stderr.strip() == "craft: nothing deleted"
    assert broker.ready(queue_name) == 2
    forced = craft(environment, *arguments, "--force")
    assert (forced.returncode, forced.stdout) == (0, "deleted 2 pending job(s)\n")
    assert broker.ready(queue_name) == 0


def test_a_broker_restart_loses_nothing_and_workers_go_on(
    queue: Queue,
    driver: AmqpDriver,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    rabbitmqctl("status")
    idle_queue = broker.name()
    queue.push(*[jobs.Numbered(number) for number in range(1000)], args=[str(markers_dir)])
    idle = start_worker("--channel", idle_queue, "--sleep", "0.2")
    wait_until(lambda: "worker" in idle.output(), 30, "the idle worker did not start")

    broker.connection.close()
    rabbitmqctl("stop_app")
    rabbitmqctl("start_app")
    rabbitmqctl("await_startup")
    wait_until(broker.answers, 60, "RabbitMQ did not come back")
    # The pusher's connection died with the broker: this push reconnects.
    queue.push(jobs.Record, args=[str(markers_dir), "after-restart"], channel=idle_queue)
    drain = start_worker("--channel", queue_name, "--stop-when-empty", "--quiet")

    assert drain.wait(timeout=90) == 0, drain.output()
    wait_until(
        lambda: jobs.markers(markers_dir, "after-restart"),
        30,
        f"the idle worker did not run the job pushed after the restart:\n{idle.output()}",
    )
    expected = {f"n{number}": 1 for number in range(1000)} | {"after-restart": 1}
    assert jobs.runs_by_name(markers_dir) == expected
    assert broker.ready(queue_name) == broker.ready(idle_queue) == 0
