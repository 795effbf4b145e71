"""Pushing to RabbitMQ: confirms, the batch window, resends after a lost connection."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import pytest

from queueing import Queue
from queueing.drivers.amqp import (
    AmqpDriver,
    AmqpUnavailableError,
    PublishRefusedError,
)
from queueing.drivers.amqp import publisher as amqp_publisher
from tests.queueing.drivers import jobs_for_amqp as jobs
from tests.queueing.drivers.amqp.support import (
    Broker,
    kill_socket_on_publish,
    queue_on,
    rabbitmqctl,
    reserve,
)


def test_push_names_the_queue_by_channel_and_one_push_sends_many_jobs(
    queue: Queue, driver: AmqpDriver, broker: Broker
) -> None:
    high = broker.name()

    ids = queue.push(jobs.Numbered(1), jobs.Numbered(2), args=["/nowhere"], channel=high)

    assert broker.ready(high) == 2
    taken = []
    for _ in ids:
        held = reserve(driver, high)
        taken.append((held.envelope.id, held.envelope.queue))
        assert driver.acknowledge(held)
    assert taken == [(job_id, high) for job_id in ids]


@pytest.mark.parametrize("count", [1, 3], ids=["single", "batch"])
def test_a_queue_deleted_after_it_was_declared_is_declared_again_on_push(
    queue: Queue, broker: Broker, queue_name: str, count: int
) -> None:
    queue.push(jobs.Record, args=["/nowhere", "a"])
    broker.channel.queue_delete(queue_name)

    queue.push(*[jobs.Record] * count, args=["/nowhere", "b"])

    assert broker.ready(queue_name) == count


@pytest.mark.parametrize("count", [1, 3], ids=["single", "batch"])
def test_a_message_the_broker_cannot_route_raises_at_push(
    drivers: Callable[..., AmqpDriver],
    key: str,
    broker: Broker,
    monkeypatch: pytest.MonkeyPatch,
    count: int,
) -> None:
    driver = drivers(queue=broker.name(), publish_attempts=2)
    queue = queue_on(driver, key)
    # Nothing declares the queue, so the mandatory message has nowhere to go.
    monkeypatch.setattr(
        "queueing.drivers.amqp.publisher.Publisher.declare", lambda *args, **kwargs: None
    )

    with pytest.raises(
        PublishRefusedError, match=rf"did not take the message.*; {count} job\(s\) not confirmed"
    ):
        queue.push(*[jobs.Record] * count, args=["/nowhere", "a"])


def test_a_queue_the_broker_refuses_to_declare_raises_at_push_and_the_driver_goes_on(
    queue: Queue, broker: Broker, queue_name: str
) -> None:
    # The queue exists with other arguments, so declaring it our way is refused.
    broker.channel.queue_declare(queue_name, durable=True, arguments={"x-max-length": 10})
    elsewhere = broker.name()

    with pytest.raises(PublishRefusedError, match=r"406 PRECONDITION_FAILED.*1 job"):
        queue.push(jobs.Numbered(1), args=["/nowhere"])

    queue.push(jobs.Numbered(2), args=["/nowhere"], channel=elsewhere)
    assert (broker.ready(queue_name), broker.ready(elsewhere)) == (0, 1)


def test_pushing_from_8_threads_delivers_every_job_once_over_one_connection_per_thread(
    queue: Queue, driver: AmqpDriver, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[int] = []
    real = pika.BlockingConnection

    def counting(parameters: Any) -> Any:
        opened.append(threading.get_ident())
        return real(parameters)

    monkeypatch.setattr("queueing.drivers.amqp.publisher.pika.BlockingConnection", counting)
    pushed: list[str] = []
    problems: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def push_many() -> None:
        start.wait()
        try:
            for number in range(40):
                ids = queue.push(jobs.Numbered(number), args=["/nowhere"])
                with lock:
                    pushed.extend(ids)
        except BaseException as error:
            problems.append(error)

    threads = [threading.Thread(target=push_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert problems == []
    assert len(opened) == len(set(opened)) == 8
    taken = []
    while len(taken) < len(pushed):
        held = reserve(driver, queue_name)
        taken.append(held.envelope.id)
        assert driver.acknowledge(held)
    assert sorted(taken) == sorted(pushed)
    assert len(set(pushed)) == 320
    assert not driver.waiting([queue_name])


def test_a_bulk_push_beyond_the_confirm_window_queues_every_job_once_in_order(
    queue: Queue, driver: AmqpDriver, broker: Broker, queue_name: str
) -> None:
    count = amqp_publisher.CONFIRM_WINDOW * 2 + 7

    ids = queue.push(*[jobs.Numbered(n) for n in range(count)], args=["/nowhere"])

    # push() returned: the broker has confirmed every one of them.
    assert broker.ready(queue_name) == count
    assert taken_ids(driver, queue_name, count) == ids


def test_a_connection_lost_mid_push_resends_only_the_jobs_not_confirmed(
    queue: Queue,
    driver: AmqpDriver,
    broker: Broker,
    queue_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A window of one: each message of the batch waits for its confirm
    # before the next goes out, so which were confirmed is known exactly.
    monkeypatch.setattr(amqp_publisher, "CONFIRM_WINDOW", 1)
    tried = kill_socket_on_publish(monkeypatch, lambda number: number == 2)

    ids = queue.push(jobs.Numbered(1), jobs.Numbered(2), jobs.Numbered(3), args=["/nowhere"])

    # The first job was confirmed before the connection died: only the
    # second and third are published (again) on the new connection.
    assert tried == [1, 2, 3, 4]
    assert broker.ready(queue_name) == 3
    assert taken_ids(driver, queue_name, len(ids)) == ids


def test_a_batch_whose_connection_dies_before_its_confirms_is_sent_again_and_each_job_arrives(
    queue: Queue,
    driver: AmqpDriver,
    broker: Broker,
    queue_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tried = kill_socket_on_publish(monkeypatch, lambda number: number == 2)

    ids = queue.push(jobs.Numbered(1), jobs.Numbered(2), jobs.Numbered(3), args=["/nowhere"])

    # The three went out back to back on a connection that died before any
    # confirm came back, so all three are published again.
    assert tried == [1, 2, 3, 4, 5, 6]
    assert broker.ready(queue_name) == 3
    assert taken_ids(driver, queue_name, len(ids)) == ids


def taken_ids(driver: AmqpDriver, queue_name: str, count: int) -> list[str]:
    """Reserve and acknowledge `count` jobs; return their ids in the order they came."""
    taken = []
    for _ in range(count):
        held = reserve(driver, queue_name)
        taken.append(held.envelope.id)
        assert driver.acknowledge(held)
    return taken


def test_a_push_whose_connection_keeps_dying_raises_amqp_unavailable_and_queues_nothing(
    drivers: Callable[..., AmqpDriver],
    key: str,
    broker: Broker,
    queue_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    driver = drivers(queue=queue_name, publish_attempts=3)
    queue = queue_on(driver, key)
    tried = kill_socket_on_publish(monkeypatch, lambda number: True)

    with pytest.raises(
        AmqpUnavailableError, match=r"after 3 attempt\(s\).*; 2 job\(s\) not confirmed"
    ):
        queue.push(jobs.Numbered(1), jobs.Numbered(2), args=["/nowhere"])

    # Each attempt publishes both jobs back to back on a connection that dies.
    assert tried == [1, 2, 3, 4, 5, 6]
    assert broker.get(queue_name) is None
    # Once the network is back, the same driver pushes again.
    monkeypatch.undo()
    queue.push(jobs.Numbered(3), args=["/nowhere"])
    assert broker.ready(queue_name) == 1


@pytest.mark.parametrize("count", [1, 3], ids=["single", "batch"])
def test_a_message_the_broker_nacks_raises_at_push(
    drivers: Callable[..., AmqpDriver], key: str, broker: Broker, queue_name: str, count: int
) -> None:
    driver = drivers(queue=queue_name, publish_attempts=2)
    queue = queue_on(driver, key)
    driver.check()
    # A full queue that rejects publishes makes the broker nack every message.
    policy = f"{queue_name}-full"
    rabbitmqctl(
        "set_policy",
        "--apply-to",
        "queues",
        policy,
        f"^{queue_name}$",
        '{"max-length": 0, "overflow": "reject-publish"}',
    )
    try:
        with pytest.raises(
            PublishRefusedError,
            match=rf"NackError.*after 2 attempt\(s\); {count} job\(s\) not confirmed",
        ):
            queue.push(*[jobs.Numbered(n) for n in range(count)], args=["/nowhere"])
    finally:
        rabbitmqctl("clear_policy", policy)

    assert broker.get(queue_name) is None


def test_an_idle_pusher_whose_connection_died_of_missed_heartbeats_reconnects_first(
    drivers: Callable[..., AmqpDriver], key: str, broker: Broker, queue_name: str
) -> None:
    driver = drivers(queue=queue_name, heartbeat=1, publish_attempts=1)
    queue = queue_on(driver, key)
    queue.push(jobs.Numbered(1), args=["/nowhere"])

    # Nothing reads the connection meanwhile, so the broker closes it.
    time.sleep(3.5)
    queue.push(jobs.Numbered(2), args=["/nowhere"])

    assert broker.ready(queue_name) == 2
