"""Running a function on the thread that owns a pika connection, and waiting for it.

pika's blocking connections are not thread-safe: the worker's thread hands
each call to the consumer thread and waits for its outcome, giving up when
the connection it was meant for is gone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pika
import pika.exceptions as amqp

from queueing.drivers.amqp.errors import AmqpUnavailableError

T = TypeVar("T")

# How long a worker call handed to the consumer thread may take.
CALL_TIMEOUT_SECONDS = 30.0


class StaleDelivery(Exception):
    """The connection a delivery came on is gone."""


class Call:
    """A function to run on the consumer thread, and its outcome."""

    def __init__(self, function: Callable[[], Any]) -> None:
        self.function = function
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        """Run the function, keeping its result or error for the waiting thread."""
        try:
            self.result = self.function()
        except BaseException as error:  # handed to the waiting thread
            self.error = error
        finally:
            self.done.set()


def run_on_connection_thread(
    connection: pika.BlockingConnection,
    function: Callable[[], T],
    current: Callable[[], bool],
    where: str,
) -> T:
    """Have `connection`'s thread run `function`; return its result or raise its error.

    Raises `StaleDelivery` as soon as `current()` says the connection was
    replaced, and `AmqpUnavailableError` after `CALL_TIMEOUT_SECONDS`.
    """
    call = Call(function)
    try:
        connection.add_callback_threadsafe(call.run)
    except amqp.ConnectionWrongStateError as error:
        raise StaleDelivery() from error
    deadline = time.monotonic() + CALL_TIMEOUT_SECONDS
    while not call.done.wait(0.1):
        if not current():
            raise StaleDelivery()
        if time.monotonic() > deadline:
            raise AmqpUnavailableError(
                f"RabbitMQ at {where} did not answer in {CALL_TIMEOUT_SECONDS:g}s"
            )
    if call.error is not None:
        raise call.error
    return call.result
