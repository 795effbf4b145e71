"""Working: reserving, acknowledging, prefetching and giving back, on a real broker."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from queueing import JobRunner, Queue
from queueing.drivers.amqp import (
    AmqpDriver,
)
from queueing.drivers.amqp import prefetch as amqp_prefetch
from queueing.failed import DatabaseFailedJobStore
from tests.queueing.drivers import jobs_for_amqp as jobs
from tests.queueing.drivers.amqp.support import (
    Broker,
    RecordingStore,
    WorkerProcess,
    queue_on,
    reserve,
    settled,
    wait_until,
    work,
)


def test_push_then_reserve_returns_the_envelope_with_one_attempt_and_acknowledge_removes_it(
    queue: Queue, driver: AmqpDriver, runner: JobRunner, broker: Broker, queue_name: str
) -> None:
    [job_id] = queue.push(jobs.Record, args=["/nowhere", "a"])

    held = reserve(driver, queue_name)

    envelope = held.envelope
    assert (envelope.id, envelope.queue, envelope.driver, envelope.attempts) == (
        job_id,
        queue_name,
        "amqp",
        1,
    )
    assert envelope.name == "tests.queueing.drivers.jobs_for_amqp.Record"
    job = runner.signer.load(envelope.body)
    assert (job["obj"], job["args"]) == (jobs.Record, ("/nowhere", "a"))
    assert driver.acknowledge(held)
    assert driver.counts()[0].pending == 0
    assert not driver.waiting([queue_name])


def test_release_with_the_attempt_given_back_redelivers_the_same_job(
    queue: Queue, driver: AmqpDriver, queue_name: str
) -> None:
    [job_id] = queue.push(jobs.Numbered(7), args=["/nowhere"])
    held = reserve(driver, queue_name)

    assert driver.release(held, 0.0, count_attempt=False)

    again = reserve(driver, queue_name)
    assert (again.envelope.id, again.envelope.attempts) == (job_id, 1)
    assert again.envelope.body == held.envelope.body


def test_a_job_failing_its_last_attempt_is_stored_then_acknowledged(
    queue: Queue,
    driver: AmqpDriver,
    runner: JobRunner,
    store: RecordingStore,
    broker: Broker,
    queue_name: str,
) -> None:
    broker.delayed(queue_name, 3.0)
    [job_id] = queue.push(jobs.FailFirst, args=["/nowhere/missing", "x"])

    lines = work(driver, runner, queue_name, max_jobs=2)

    # Both attempts fail (the marker folder does not exist); the second is the last.
    assert [failure.reason for failure in store.failures] == ["failed"]
    assert store.failures[0].envelope.id == job_id
    assert store.failures[0].envelope.attempts == 2
    assert any("failed" in line for line in lines)
    assert not driver.waiting([queue_name])
    assert broker.ready(queue_name) == 0


def test_a_worker_holds_no_more_unacknowledged_messages_than_prefetch(
    drivers: Callable[..., AmqpDriver], key: str, broker: Broker, queue_name: str
) -> None:
    driver = drivers(queue=queue_name, prefetch=2)
    queue = queue_on(driver, key)
    queue.push(*[jobs.Numbered(number) for number in range(4)], args=["/nowhere"])

    held = reserve(driver, queue_name)

    wait_until(lambda: broker.ready(queue_name) == 2, 5, "the consumer took more or fewer than 2")
    time.sleep(0.3)
    assert broker.ready(queue_name) == 2
    assert driver.acknowledge(held)
    wait_until(lambda: broker.ready(queue_name) == 1, 5, "the acknowledgement freed no room")


def test_acknowledgements_in_any_order_settle_every_message_on_one_channel(
    drivers: Callable[..., AmqpDriver],
    key: str,
    broker: Broker,
    queue_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = drivers(queue=queue_name, prefetch=10)
    queue = queue_on(driver, key)
    queue.push(*[jobs.Numbered(number) for number in range(6)], args=["/nowhere"])
    held = [reserve(driver, queue_name) for _ in range(6)]

    # Later deliveries first, then runs that step over them: a `multiple`
    # acknowledgement must never name a delivery twice (the broker would
    # close the channel and deliver everything again).
    for index in (2, 0, 1, 5, 3, 4):
        assert driver.acknowledge(held[index])
        time.sleep(0.05)

    assert settled(driver, broker, queue_name)
    assert "lost the consumer connection" not in caplog.text


def test_a_job_running_long_gives_back_the_messages_prefetched_behind_it(
    drivers: Callable[..., AmqpDriver], key: str, broker: Broker, queue_name: str
) -> None:
    driver = drivers(queue=queue_name, prefetch=5)
    queue = queue_on(driver, key)
    pushed = queue.push(*[jobs.Numbered(number) for number in range(8)], args=["/nowhere"])
    held = reserve(driver, queue_name)
    wait_until(lambda: broker.ready(queue_name) == 3, 5, "the consumer did not prefetch 5")

    # What the worker's keeper calls once the job has run `extend_every` seconds.
    assert driver.extend_every == amqp_prefetch.LONG_JOB_SECONDS
    assert driver.extend(held)

    # The 4 buffered behind it go back, with no attempt spent, and no new
    # message comes while the long job runs.
    assert broker.ready(queue_name) == 7
    time.sleep(0.3)
    assert broker.ready(queue_name) == 7
    assert driver.reserve([queue_name]) is None
    assert driver.acknowledge(held)
    # After the long job, messages come one at a time...
    second = reserve(driver, queue_name)
    assert (second.envelope.attempts, second.envelope.id in pushed) == (1, True)
    wait_until(lambda: broker.ready(queue_name) == 6, 5, "the next message did not come")
    # ...so a second long job in a row has nothing to give back.
    assert driver.extend(second)
    assert broker.ready(queue_name) == 6
    assert driver.acknowledge(second)
    third = reserve(driver, queue_name)
    wait_until(lambda: broker.ready(queue_name) == 5, 5, "the next message did not come")
    # A job that ends without running long brings the full prefetch back.
    assert driver.acknowledge(third)
    wait_until(lambda: broker.ready(queue_name) == 0, 5, "prefetching did not resume")
    driver.close()
    wait_until(lambda: broker.ready(queue_name) == 5, 5, "the 5 jobs left did not come back")


def test_a_worker_busy_with_a_long_job_lets_another_worker_run_the_jobs_behind_it(
    drivers: Callable[..., AmqpDriver],
    key: str,
    runner: JobRunner,
    queue_name: str,
    markers_dir: Path,
) -> None:
    first = drivers(queue=queue_name, prefetch=10)
    queue = queue_on(first, key)
    queue.push(jobs.SlowRecord, args=[str(markers_dir), "slow", 3.0])
    queue.push(*[jobs.Record] * 4, args=[str(markers_dir), "quick"])
    busy = threading.Thread(target=work, args=(first, runner, queue_name), kwargs={"max_jobs": 1})
    busy.start()
    wait_until(
        lambda: jobs.markers(markers_dir, "slow", "started"), 10, "the slow job did not start"
    )

    second = drivers(queue=queue_name, prefetch=10)
    work(second, runner, queue_name, max_jobs=4)
    busy.join(timeout=30)

    [slow_done] = jobs.marker_times(markers_dir, "slow")
    quick = jobs.marker_times(markers_dir, "quick")
    assert len(quick) == 4
    assert max(quick) < slow_done


def test_a_stopping_worker_gives_back_its_prefetched_messages_with_no_attempt_spent(
    drivers: Callable[..., AmqpDriver],
    key: str,
    runner: JobRunner,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
) -> None:
    driver = drivers(queue=queue_name, prefetch=5)
    queue = queue_on(driver, key)
    pushed = queue.push(*[jobs.Numbered(number) for number in range(6)], args=[str(markers_dir)])

    lines = work(driver, runner, queue_name, max_jobs=2)

    assert sum(" done " in line for line in lines) == 2, lines
    wait_until(lambda: broker.ready(queue_name) == 4, 10, "prefetched messages were not given back")
    left = [broker.get(queue_name) for _ in range(4)]
    assert all(message is not None for message in left)
    assert {message[1].message_id for message in left} <= set(pushed)
    # Published anew with their attempts as they were. A delivery pika had read
    # but not yet handed over when the consumer was cancelled is requeued by
    # pika itself, flagged redelivered; at most the last in flight can be that.
    assert [message[1].headers["job-attempts"] for message in left] == [0] * 4
    assert sum(message[0].redelivered for message in left) <= 1


def test_a_job_giving_up_has_failed_called_is_stored_and_is_acknowledged(
    queue: Queue,
    driver: AmqpDriver,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
    sqlite_failed_store: DatabaseFailedJobStore,
    storing_runner: JobRunner,
) -> None:
    [job_id] = queue.push(jobs.GivesUp, args=[str(markers_dir), "doomed"])

    lines = work(driver, storing_runner, queue_name, max_jobs=1)

    [failed_marker] = jobs.markers(markers_dir, "doomed", "failed")
    assert failed_marker.read_text() == f"1 {queue_name} this job always fails"
    [stored] = sqlite_failed_store.all()
    assert (stored.uuid, stored.driver, stored.queue, stored.reason, stored.attempts) == (
        job_id,
        "amqp",
        queue_name,
        "failed",
        1,
    )
    assert any("failed" in line and job_id in line for line in lines)
    assert settled(driver, broker, queue_name)


def test_a_failing_plain_function_is_stored_as_failed_and_the_worker_goes_on(
    queue: Queue,
    driver: AmqpDriver,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
    sqlite_failed_store: DatabaseFailedJobStore,
    storing_runner: JobRunner,
) -> None:
    [function_id] = queue.push(jobs.explode, args=[str(markers_dir), "boom"])
    queue.push(jobs.Record, args=[str(markers_dir), "next"])

    lines = work(driver, storing_runner, queue_name, max_jobs=2)

    # A function runs once: no retry, no callback.
    assert len(jobs.markers(markers_dir, "boom", "attempt")) == 1
    assert len(jobs.markers(markers_dir, "next")) == 1
    [stored] = sqlite_failed_store.all()
    assert (stored.uuid, stored.name, stored.reason, stored.exception_type) == (
        function_id,
        "tests.queueing.drivers.jobs_for_amqp.explode",
        "failed",
        "ValueError",
    )
    assert any("ValueError: a plain function failed" in line for line in lines)
    assert settled(driver, broker, queue_name)


def test_a_job_whose_worker_is_killed_is_delivered_again_and_completes(
    queue: Queue,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    queue.push(jobs.SlowRecord, args=[str(markers_dir), "slow", 2.0])
    first = start_worker("--channel", queue_name)
    wait_until(lambda: jobs.markers(markers_dir, "slow", "started"), 30, "the job did not start")

    first.process.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert jobs.markers(markers_dir, "slow") == []
    second = start_worker("--channel", queue_name, "--stop-when-empty")

    assert second.wait(timeout=30) == 0, second.output()
    assert len(jobs.markers(markers_dir, "slow", "started")) == 2
    assert len(jobs.markers(markers_dir, "slow")) == 1
    assert "done" in second.output()
    assert broker.ready(queue_name) == 0


def test_a_job_running_3_times_the_heartbeat_completes_on_a_live_connection(
    queue: Queue,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    queue.push(jobs.SlowRecord, args=[str(markers_dir), "long", 6.5])
    queue.push(jobs.Record, args=[str(markers_dir), "after"])

    worker = start_worker("--channel", queue_name, "--stop-when-empty", QUEUE_AMQP_HEARTBEAT="2")

    assert worker.wait(timeout=40) == 0, worker.output()
    output = worker.output()
    assert len(jobs.markers(markers_dir, "long", "started")) == 1
    assert len(jobs.markers(markers_dir, "long")) == 1
    assert len(jobs.markers(markers_dir, "after")) == 1
    assert "lost" not in output and "unavailable" not in output, output
    assert broker.ready(queue_name) == 0
