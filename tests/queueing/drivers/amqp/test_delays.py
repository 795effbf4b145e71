"""Delays: holding queues that hold a job until it is due, without blocking its queue."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from queueing import JobRunner, Queue
from queueing.delay import MAX_WAIT_SECONDS
from queueing.drivers.amqp import (
    AmqpDriver,
    holding_delay,
    holding_queue_name,
)
from tests.queueing.drivers import jobs_for_amqp as jobs
from tests.queueing.drivers import jobs_for_database as database_jobs
from tests.queueing.drivers.amqp.support import (
    Broker,
    reserve,
    settled,
    work,
)


def test_a_delayed_bulk_push_waits_in_a_holding_queue_then_every_job_runs(
    queue: Queue,
    driver: AmqpDriver,
    runner: JobRunner,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
) -> None:
    broker.delayed(queue_name, 1)
    pushed_at = time.time()

    queue.push(*[jobs.Record] * 5, args=[str(markers_dir), "later"], wait=1)

    [counts] = driver.counts()
    assert (counts.pending, counts.delayed) == (0, 5)
    work(driver, runner, queue_name, max_jobs=5)
    started = jobs.marker_times(markers_dir, "later")
    assert len(started) == 5
    assert all(0.9 <= at - pushed_at < 4 for at in started)


def test_a_retry_waits_in_a_holding_queue_with_the_same_body_and_its_attempts_in_the_headers(
    queue: Queue, driver: AmqpDriver, broker: Broker, queue_name: str
) -> None:
    broker.delayed(queue_name, 5.0)
    [job_id] = queue.push(jobs.Numbered(7), args=["/nowhere"])
    held = reserve(driver, queue_name)

    assert driver.release(held, 5.0)

    holding = holding_queue_name(queue_name, holding_delay(5.0))
    _method, properties, body = broker.get(holding) or pytest.fail("no message is held")
    assert properties.message_id == job_id
    assert properties.headers["job-attempts"] == 1
    # The same signed body: the instance goes back with the state it was pushed with.
    assert body == held.envelope.body
    assert settled(driver, broker, queue_name)


def test_a_job_delayed_1s_pushed_after_one_delayed_5s_runs_first(
    queue: Queue,
    driver: AmqpDriver,
    runner: JobRunner,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
) -> None:
    broker.delayed(queue_name, 5)
    broker.delayed(queue_name, 1)
    pushed_at = time.time()
    queue.push(jobs.Record, args=[str(markers_dir), "late"], wait="5 seconds")
    queue.push(jobs.Record, args=[str(markers_dir), "soon"], wait=1)
    [counts] = driver.counts()
    assert (counts.pending, counts.delayed) == (0, 2)

    work(driver, runner, queue_name, max_jobs=2)

    [soon] = jobs.marker_times(markers_dir, "soon")
    [late] = jobs.marker_times(markers_dir, "late")
    assert 0.9 <= soon - pushed_at < 3
    assert 4.9 <= late - pushed_at < 8


def test_a_retry_delay_does_not_hold_back_the_jobs_behind_it(
    queue: Queue,
    driver: AmqpDriver,
    runner: JobRunner,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
) -> None:
    broker.delayed(queue_name, 3.0)
    queue.push(jobs.FailFirst, args=[str(markers_dir), "flaky"])
    queue.push(jobs.Record, args=[str(markers_dir), "next"])
    started = time.time()

    # The retry waits in a holding queue, which keeps the worker from stopping.
    work(driver, runner, queue_name, stop_when_empty=True)

    [first_attempt, retry] = jobs.marker_times(markers_dir, "flaky", "attempt")
    [following] = jobs.marker_times(markers_dir, "next")
    assert following - started < 1.5
    assert following < retry
    assert 2.9 <= retry - first_attempt < 6
    assert len(jobs.markers(markers_dir, "flaky")) == 1


def test_holding_delays_are_rounded_up_by_about_one_percent_at_most() -> None:
    assert holding_delay(0) == 0
    assert holding_delay(-3) == 0
    assert holding_delay(0.0004) == 0
    assert holding_delay(0.0123) == 13
    assert holding_delay(0.9754) == 976
    assert holding_delay(1.0) == holding_delay(0.991) == 1000
    assert holding_delay(1.0 + 2e-7) == 1000
    assert holding_delay(1.004) == 1010
    assert holding_delay(599.997) == holding_delay(600) == 600_000
    assert holding_delay(86_399.2) == 86_400_000
    for seconds in (0.0017, 0.49, 3.3333, 59.9, 61.5, 3599.9, 7 * 86_400.0 + 0.5):
        assert seconds * 1000 <= holding_delay(seconds) <= seconds * 1000 * 1.011 + 1
    assert holding_queue_name("mail", 1000) == "mail.delay.1000"


def test_a_wait_of_49_days_is_held_by_the_broker_and_a_longer_one_refused_at_push(
    queue: Queue, driver: AmqpDriver, broker: Broker, queue_name: str
) -> None:
    broker.delayed(queue_name, MAX_WAIT_SECONDS)

    queue.push(jobs.Record, args=["unused", "later"], wait="49 days")
    with pytest.raises(ValueError, match="longest wait a job may have is 49 days"):
        queue.push(jobs.Record, args=["unused", "never"], wait=10**12)

    [counts] = driver.counts()
    assert (counts.pending, counts.delayed) == (0, 1)


def test_a_job_that_releases_itself_waits_in_a_holding_queue_with_its_attempt_given_back(
    queue: Queue,
    driver: AmqpDriver,
    runner: JobRunner,
    broker: Broker,
    queue_name: str,
    tmp_path: Path,
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    broker.delayed(queue_name, 0.2)
    queue.push(database_jobs.ReleasesOnce, args=[str(markers), "polite"])

    lines = work(driver, runner, queue_name, max_jobs=2)

    assert len(database_jobs.markers(markers, "polite", "attempt")) == 2
    assert len(database_jobs.markers(markers, "polite")) == 1
    assert "released" in lines[0] and "done" in lines[1]
    assert settled(driver, broker, queue_name)
