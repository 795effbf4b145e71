"""The message layout: metadata in properties and headers, and bodies that are not ours."""

from __future__ import annotations

import pickle
import secrets
from pathlib import Path

import pika
import pika.exceptions
import pytest

from queueing import JobRunner, Queue
from queueing.drivers.amqp import (
    AmqpDriver,
    envelope_from_message,
    message_properties,
)
from queueing.payload import MAGIC, Envelope
from tests.queueing.drivers import jobs_for_amqp as jobs
from tests.queueing.drivers.amqp.support import (
    Broker,
    RecordingStore,
    settled,
    work,
)


def test_messages_are_persistent_in_a_durable_queue_with_the_metadata_in_headers(
    queue: Queue, broker: Broker, queue_name: str
) -> None:
    [job_id] = queue.push(jobs.Record, args=["/nowhere", "a"])

    method, properties, body = broker.get(queue_name) or pytest.fail("no message")

    assert properties.delivery_mode == 2
    assert properties.message_id == job_id
    assert properties.type == "tests.queueing.drivers.jobs_for_amqp.Record"
    assert "job-name" not in properties.headers  # the name fits in `type`
    assert properties.headers["job-attempts"] == 0
    assert properties.headers["job-created"]
    assert properties.headers["job-signature"] == body[len(MAGIC) : len(MAGIC) + 32].hex()
    assert body.startswith(MAGIC)
    assert not method.redelivered
    # Declaring the queue as not durable contradicts how it exists.
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="durable"):
        broker.channel.queue_declare(queue_name, durable=False)


def test_a_job_name_too_long_for_the_type_property_travels_whole_in_a_header() -> None:
    name = "app.jobs." + "VeryLong" * 40
    envelope = Envelope(
        id="job-1",
        name=name,
        queue="mail",
        driver="amqp",
        created="now",
        available_at=5.0,
        body=b"body",
        attempts=2,
    )

    properties = message_properties(envelope, now=1.0)
    read = envelope_from_message("mail", properties, b"body", redelivered=False, now=1.0)

    assert len(properties.type.encode()) == 255
    assert properties.headers["job-name"] == name
    assert (read.id, read.name, read.queue, read.attempts, read.available_at) == (
        "job-1",
        name,
        "mail",
        3,
        5.0,
    )


def test_forged_messages_are_parked_and_acknowledged_without_being_unpickled(
    driver: AmqpDriver,
    runner: JobRunner,
    store: RecordingStore,
    broker: Broker,
    queue_name: str,
    markers_dir: Path,
) -> None:
    evil = pickle.dumps({"obj": jobs.Forged(str(markers_dir)), "args": ()})
    broker.publish(
        queue_name,
        MAGIC + secrets.token_bytes(32) + evil,
        {"job-attempts": 0},
        message_id="forged-1",
        type="evil.Job",
    )
    broker.publish(queue_name, evil)

    work(driver, runner, queue_name, max_jobs=2)

    [wrong_key] = [failure for failure in store.failures if failure.envelope.id == "forged-1"]
    [unsigned] = [failure for failure in store.failures if failure is not wrong_key]
    assert (wrong_key.envelope.id, wrong_key.envelope.name) == ("forged-1", "evil.Job")
    assert wrong_key.reason == "signature"
    # A bare pickle is refused as forged or as not ours, depending on how it starts.
    assert unsigned.reason in {"signature", "corrupt"}
    assert unsigned.envelope.name == "unknown"
    assert all(failure.envelope.queue == queue_name for failure in store.failures)
    assert list(markers_dir.iterdir()) == []
    assert not driver.waiting([queue_name])
    assert settled(driver, broker, queue_name)


def test_a_message_that_is_not_ours_is_parked_as_corrupt_and_acknowledged(
    driver: AmqpDriver,
    runner: JobRunner,
    store: RecordingStore,
    broker: Broker,
    queue_name: str,
) -> None:
    broker.publish(queue_name, b"not a payload " + secrets.token_bytes(48))
    broker.publish(queue_name, b"")

    lines = work(driver, runner, queue_name, max_jobs=2)

    assert [failure.reason for failure in store.failures] == ["corrupt", "corrupt"]
    assert {failure.envelope.name for failure in store.failures} == {"unknown"}
    assert any("parked" in line for line in lines)
    assert settled(driver, broker, queue_name)
