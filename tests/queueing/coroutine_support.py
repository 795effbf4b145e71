"""What the async-job tests share: a store that no job may reach, and deleting test queues."""

from __future__ import annotations

import contextlib
from typing import Any

import pika


class NoFailures:
    """A failed-job store for tests where no job may fail: storing one fails the test."""

    def store(self, failure: Any) -> None:
        """Fail the test, naming the job's error."""
        raise AssertionError(f"no job should fail here: {failure.message}")


def delete_amqp_queues(*names: str) -> None:
    """Delete the RabbitMQ queues `names` (missing ones are fine)."""
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
    try:
        channel = connection.channel()
        for name in names:
            with contextlib.suppress(pika.exceptions.AMQPError):
                channel.queue_delete(name)
    finally:
        connection.close()
