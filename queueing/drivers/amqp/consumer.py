"""A worker's consumer: a background thread that only moves frames.

The thread keeps heartbeats flowing and buffers deliveries while the job
runs in the worker's thread; acknowledgements, cancels and counts are handed
to it, since pika's channel belongs to the thread that drives it.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pika
import pika.exceptions as amqp

from queueing.drivers.amqp.acknowledgements import AcknowledgementRuns
from queueing.drivers.amqp.calls import (
    CALL_TIMEOUT_SECONDS,
    StaleDelivery,
    run_on_connection_thread,
)
from queueing.drivers.amqp.deliveries import Delivery, Received
from queueing.drivers.amqp.errors import AmqpUnavailableError, describe
from queueing.drivers.amqp.prefetch import Prefetching
from queueing.drivers.amqp.settings import Parameters, named
from queueing.drivers.amqp.suspects import SUSPECT_CHECK_SECONDS, suspects_queue_name

logger = logging.getLogger("queueing.amqp")

T = TypeVar("T")

# Seconds the consumer thread blocks in pika's I/O loop per turn; threadsafe
# callbacks (acknowledgements) wake it at once, so this only bounds shutdown.
POLL_SECONDS = 0.2
RECONNECT_MIN_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 5.0
# How long `waiting()` lets a delivery on its way arrive before it asks the broker.
BUFFER_GRACE_SECONDS = 0.05


class Consumer:
    """A consumer connection owned by a background thread, which only moves frames.

    Every connection it opens has a new generation number; a delivery is
    acknowledged only on the connection (generation) it came on.
    """

    def __init__(
        self,
        parameters: Parameters,
        queues: Sequence[str],
        prefetch: int,
        where: str,
    ) -> None:
        self.pid = os.getpid()
        self.queues = tuple(dict.fromkeys(queues))
        self._parameters = parameters
        self._prefetch = prefetch
        self._where = where
        self._state = threading.Condition()
        self._buffer: dict[str, deque[Received]] = {queue: deque() for queue in self.queues}
        self._generation = 0
        self._connected = False
        self._tried = False
        self._problem = "still connecting"
        self._cancelled = False
        self._paused = False
        self._unsent_acknowledgements: list[int] = []
        self._flush_scheduled = False
        # On the consumer thread only.
        self._acknowledged = AcknowledgementRuns()
        # Under `_state`: how the consumer takes messages (see `hold_back`).
        self._prefetching = Prefetching(prefetch)
        # Whether suspects may wait to run alone; read without the lock on
        # every reserve (a stale value only delays them by one job).
        self.suspects_due = False
        self._next_suspect_check = 0.0
        self._stopping = threading.Event()
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._thread = threading.Thread(target=self._run, name="amqp-consumer", daemon=True)
        self._thread.start()
        _running.add(self)

    # Used by the worker's thread ------------------------------------------------------

    def serves(self, queues: Sequence[str]) -> bool:
        """Say whether this consumer takes from exactly `queues`."""
        return tuple(dict.fromkeys(queues)) == self.queues

    def raise_if_down(self) -> None:
        """Raise `AmqpUnavailableError` unless connected (waiting for the first try)."""
        with self._state:
            self._state.wait_for(lambda: self._connected or self._tried, CALL_TIMEOUT_SECONDS)
            if not self._connected:
                raise AmqpUnavailableError(
                    f"cannot consume from RabbitMQ at {self._where}: {self._problem}"
                )

    def take(self, queues: Sequence[str]) -> Received | None:
        """Pop the next buffered delivery, in the priority order of `queues`."""
        with self._state:
            for queue in queues:
                buffered = self._buffer.get(queue)
                if buffered:
                    return buffered.popleft()
        return None

    def take_redelivered(self) -> list[Received]:
        """Pop every buffered delivery flagged redelivered, leaving the others in order."""
        with self._state:
            taken = []
            for buffered in self._buffer.values():
                kept = [received for received in buffered if not received.redelivered]
                taken += [received for received in buffered if received.redelivered]
                buffered.clear()
                buffered.extend(kept)
        return taken

    def expect_suspects(self) -> None:
        """Suspects were published: take them before the next buffered delivery."""
        with self._state:
            self.suspects_due = True
            self._state.notify_all()

    def isolate(self) -> list[Received]:
        """Take no more messages, and pop the buffered ones, so a suspect can run alone.

        The caller gives back what is returned; acknowledgements queued
        before this reach the broker before the suspect is taken (the
        consumer thread runs calls in order). Consuming resumes with `resume`.
        """
        with self._state:
            generation = self._generation
            self._prefetching.isolate()
        self._call(self._cancel_consumers, generation)
        # Deliveries read while the cancel waited for the broker reach the
        # buffer once the consumer thread has dispatched them: one more call.
        self._call(lambda: None, generation)
        return self.take_all()

    def take_suspect(self) -> Received | None:
        """Take one message of the suspects queues, in the priority order of the queues."""
        with self._state:
            generation = self._generation

        def get() -> Received | None:
            for queue in self.queues:
                method, properties, body = self._channel.basic_get(
                    suspects_queue_name(queue), auto_ack=False
                )
                if method is not None:
                    self._acknowledged.note(method.delivery_tag)
                    return Received(
                        queue,
                        method.delivery_tag,
                        bool(method.redelivered),
                        properties,
                        body,
                        generation,
                        suspect=True,
                    )
            return None

        return self._call(get, generation)

    def resume(self) -> None:
        """No suspect waits: consume every queue with the full prefetch again."""
        with self._state:
            generation = self._generation
            self._prefetching.resume()
            self.suspects_due = False
        self._call(functools.partial(self._start_consumers, self._prefetch, generation), generation)

    def wait(self, queues: Sequence[str], timeout: float, wake: threading.Event) -> None:
        """Block until a delivery is buffered, suspects wait, `timeout` passes or `wake` is set."""
        deadline = time.monotonic() + timeout
        with self._state:
            while (
                not any(self._buffer.get(queue) for queue in queues)
                and not self.suspects_due
                and not wake.is_set()
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                # Short slices: `wake` is an Event this condition cannot watch.
                self._state.wait(min(remaining, 0.1))

    def holds(self, delivery: Delivery) -> bool:
        """Say whether `delivery` came on the current connection."""
        with self._state:
            return self._connected and delivery.generation == self._generation

    def acknowledge(self, delivery: Delivery) -> bool:
        """Have the consumer thread acknowledge `delivery`; False if its connection is gone.

        The worker does not wait for the frame to leave: it goes on with the
        next message while the consumer thread sends the acknowledgement. If
        the connection drops first, the broker delivers the message again (at
        least once); `stop()` lets every queued acknowledgement go out.
        """
        with self._state:
            connection = self._connection
            if connection is None or not (
                self._connected and delivery.generation == self._generation
            ):
                return False
            tag = delivery.delivery_tag
            self._unsent_acknowledgements.append(tag)
            self._prefetching.acknowledged(tag)
            # One wake-up of the consumer thread carries every acknowledgement
            # queued until it runs.
            if self._flush_scheduled:
                return True
            self._flush_scheduled = True
        try:
            connection.add_callback_threadsafe(
                functools.partial(self._send_acknowledgements, delivery.generation)
            )
        except (amqp.AMQPError, OSError, AttributeError):
            return False
        return True

    def _send_acknowledgements(self, generation: int) -> None:
        """Send the queued acknowledgements, on the consumer thread where the channel lives.

        When a job that ran long (or the one after it) asked for another
        prefetch, the consumers are started again with it (see `hold_back`).
        """
        with self._state:
            tags, self._unsent_acknowledgements = self._unsent_acknowledgements, []
            self._flush_scheduled = False
            current = generation == self._generation
            switch = self._prefetching.take_switch()
        if not (current and self._channel.is_open):
            return
        if switch is not None:
            # Before the acknowledgement: a consumer whose one message is
            # unacknowledged has none on its way to be handed back.
            self._cancel_consumers()
        self._acknowledged.send(self._channel, tags)
        if switch is not None:
            self._start_consumers(switch, generation)

    def pause(self) -> None:
        """Stop taking messages (the broker keeps the rest), for a worker that stops."""
        with self._state:
            self._paused = True
            generation = self._generation

        try:
            self._call(self._cancel_consumers, generation)
        except (StaleDelivery, AmqpUnavailableError, amqp.AMQPError, OSError) as error:
            logger.debug("cancelling the amqp consumer: %s", error)

    def hold_back(self, delivery: Delivery) -> list[Received]:
        """`delivery`'s job runs long: take no new messages, and pop the buffered ones.

        The consumer is cancelled while the job runs; once it ended, messages
        come one at a time until a job ends without running long, then with
        the full prefetch again. The caller gives back what is returned.
        """
        with self._state:
            generation = self._generation
            if not self._connected or delivery.generation != generation:
                return []
            cancel = self._prefetching.running_long(delivery.delivery_tag)
        if cancel:
            self._call(self._cancel_consumers, generation)
        # Deliveries read while that call waited for the broker reach the
        # buffer once the consumer thread has dispatched them: one more call.
        self._call(lambda: None, generation)
        return self.take_all()

    def put_back(self, received: Sequence[Received]) -> None:
        """Return deliveries to the front of the buffer, in their order."""
        with self._state:
            for each in reversed(received):
                if each.generation == self._generation:
                    self._buffer[each.queue].appendleft(each)
            self._state.notify_all()

    def take_all(self) -> list[Received]:
        """Pop every buffered delivery."""
        with self._state:
            taken = [received for buffered in self._buffer.values() for received in buffered]
            for buffered in self._buffer.values():
                buffered.clear()
        return taken

    def waiting(self, queues: Sequence[str]) -> bool:
        """Say whether the broker holds ready messages of `queues` or one is buffered.

        The count is asked on the consumer's own channel, so a message the
        broker delivered just before answering arrived before the answer; the
        second call makes sure it has been buffered before the buffer is read.
        A worker draining a queue finds the buffer empty for a moment now and
        then, so a delivery arriving within `BUFFER_GRACE_SECONDS` answers first.
        """
        with self._state:
            if self._state.wait_for(
                lambda: any(self._buffer.get(queue) for queue in queues), BUFFER_GRACE_SECONDS
            ):
                return True

        def count() -> int:
            return sum(
                self._channel.queue_declare(name, passive=True).method.message_count
                for queue in queues
                for name in (queue, suspects_queue_name(queue))
            )

        try:
            generation = self._current_generation()
            ready = self._call(count, generation)
            self._call(lambda: None, generation)
        except (StaleDelivery, amqp.AMQPError, OSError) as error:
            raise AmqpUnavailableError(
                f"cannot count messages on RabbitMQ at {self._where}: {describe(error)}"
            ) from error
        with self._state:
            return bool(ready) or any(self._buffer.get(queue) for queue in queues)

    def stop(self) -> None:
        """Stop the thread, which closes the connection (unacknowledged messages go back).

        Acknowledgements still queued for the consumer thread are sent first.
        """
        with self._state:
            generation = self._generation
        with contextlib.suppress(StaleDelivery, AmqpUnavailableError, amqp.AMQPError, OSError):
            if self._thread.is_alive() and self._thread is not threading.current_thread():
                self._call(lambda: None, generation)
        self._stopping.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        _running.discard(self)

    def _current_generation(self) -> int:
        with self._state:
            if not self._connected:
                raise AmqpUnavailableError(
                    f"cannot reach RabbitMQ at {self._where}: {self._problem}"
                )
            return self._generation

    def _call(self, function: Callable[[], T], generation: int) -> T:
        """Run `function` on the consumer thread and return what it returns."""
        with self._state:
            connection = self._connection
            if not self._connected or connection is None or generation != self._generation:
                raise StaleDelivery()

        def current() -> bool:
            with self._state:
                return generation == self._generation

        return run_on_connection_thread(connection, function, current, self._where)

    # The consumer thread ------------------------------------------------------------

    def _run(self) -> None:
        delay = RECONNECT_MIN_SECONDS
        while not self._stopping.is_set():
            try:
                self._open()
                delay = RECONNECT_MIN_SECONDS
                while not self._stopping.is_set():
                    assert self._connection is not None
                    self._connection.process_data_events(time_limit=POLL_SECONDS)
                    if self._channel.is_closed or self._cancelled:
                        raise amqp.ChannelClosed(0, "the broker closed the consumer's channel")
                    if time.monotonic() >= self._next_suspect_check:
                        self._check_suspects(self._channel)
            except Exception as error:  # the thread must outlive any failure to reconnect
                self._lost(error)
                self._stopping.wait(delay)
                delay = min(RECONNECT_MAX_SECONDS, delay * 2)
        self._close_connection()

    def _open(self) -> None:
        connection = pika.BlockingConnection(named(self._parameters, f"queueing worker {self.pid}"))
        self._connection = connection
        channel = connection.channel()
        self._acknowledged.reset()
        channel.add_on_cancel_callback(self._on_cancel)
        with self._state:
            self._generation += 1
            generation = self._generation
            self._cancelled = False
            self._prefetching.reset()
            # Suspects published before are in their queues: the check below sees them.
            self.suspects_due = False
        for queue in self.queues:
            channel.queue_declare(queue, durable=True)
        self._channel = channel
        if self._check_suspects(channel):
            # They run first, alone: consuming would only fetch messages to give back.
            with self._state:
                self._prefetching.mode = "isolated"
        else:
            self._start_consumers(self._prefetch, generation)
        with self._state:
            self._connected = True
            self._tried = True
            self._state.notify_all()
        logger.info("consuming %s on RabbitMQ at %s", ", ".join(self.queues), self._where)

    def _check_suspects(self, channel: Any) -> bool:
        """Declare the suspects queues and say whether one holds a message, on the consumer thread.

        A suspect another worker was running comes back here when that
        worker dies; this look every `SUSPECT_CHECK_SECONDS` finds it.
        """
        self._next_suspect_check = time.monotonic() + SUSPECT_CHECK_SECONDS
        ready = sum(
            channel.queue_declare(suspects_queue_name(queue), durable=True).method.message_count
            for queue in self.queues
        )
        if ready:
            self.expect_suspects()
        return bool(ready)

    def _cancel_consumers(self) -> None:
        """Stop the broker sending messages, on the consumer thread.

        pika hands back what it had read for a cancelled consumer and not
        dispatched yet; those messages come again, flagged redelivered.
        """
        for tag in list(self._channel.consumer_tags):
            self._channel.basic_cancel(tag)

    def _start_consumers(self, prefetch: int, generation: int) -> None:
        """Consume every queue with `prefetch`, on the consumer thread.

        RabbitMQ applies a prefetch to the consumers started after it is set,
        so changing it means cancelling the consumers and starting new ones.
        """
        self._channel.basic_qos(prefetch_count=prefetch)
        if self._paused:
            return
        for queue in self.queues:
            self._channel.basic_consume(
                queue, functools.partial(self._on_message, queue, generation), auto_ack=False
            )

    def _on_message(
        self,
        queue: str,
        generation: int,
        _channel: Any,
        method: Any,
        properties: pika.BasicProperties,
        body: bytes,
    ) -> None:
        tag = method.delivery_tag
        self._acknowledged.note(tag)
        received = Received(queue, tag, bool(method.redelivered), properties, body, generation)
        with self._state:
            if generation == self._generation:
                self._buffer[queue].append(received)
                self._state.notify_all()

    def _on_cancel(self, _frame: Any) -> None:
        # The broker cancels a consumer whose queue was deleted; consuming
        # again declares the queue anew.
        if not self._paused:
            self._cancelled = True

    def _lost(self, error: Exception) -> None:
        with self._state:
            was_connected = self._connected
            self._generation += 1
            self._connected = False
            self._tried = True
            self._problem = describe(error)
            for buffered in self._buffer.values():
                buffered.clear()
            # Tags of a closed channel mean nothing on the next one.
            self._unsent_acknowledgements = []
            self._flush_scheduled = False
            self._state.notify_all()
        if was_connected:
            logger.warning(
                "lost the consumer connection to RabbitMQ at %s (%s); reconnecting",
                self._where,
                self._problem,
            )
        self._close_connection()

    def _close_connection(self) -> None:
        connection, self._connection = self._connection, None
        with self._state:
            self._connected = False
            self._state.notify_all()
        if connection is None:
            return
        try:
            if connection.is_open:
                connection.close()
        except Exception as error:  # a dying connection may fail in many ways
            logger.debug("closing the amqp consumer connection: %s", error)


# Consumers still running, stopped at exit so their connections close cleanly.
_running: weakref.WeakSet[Consumer] = weakref.WeakSet()


@atexit.register
def _stop_consumers() -> None:
    for consumer in list(_running):
        if consumer.pid == os.getpid():
            consumer.stop()
