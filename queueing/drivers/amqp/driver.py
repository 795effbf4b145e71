"""The `amqp` driver: the `Driver` protocol on RabbitMQ, composed of the package's parts.

It routes each job (its queue, a holding queue, or a suspects queue),
publishes through `Publishers`, and turns the consumer's deliveries into
jobs a worker holds, acknowledges, releases or gives back.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import replace

import pika.exceptions as amqp

from queueing.clock import Clock, SystemClock
from queueing.drivers.amqp.calls import StaleDelivery
from queueing.drivers.amqp.consumer import Consumer
from queueing.drivers.amqp.delays import (
    HoldingQueues,
    holding_delay,
    holding_queue_arguments,
    holding_queue_name,
)
from queueing.drivers.amqp.deliveries import Delivery, Received
from queueing.drivers.amqp.errors import AmqpUnavailableError, describe
from queueing.drivers.amqp.messages import (
    DRIVER_NAME,
    UNCONFIRMED_DEATH_HEADER,
    envelope_from_message,
    message_properties,
)
from queueing.drivers.amqp.prefetch import LONG_JOB_SECONDS
from queueing.drivers.amqp.publisher import Outgoing, Publisher, Publishers
from queueing.drivers.amqp.settings import (
    DEFAULT_PREFETCH,
    broker_address,
    connection_parameters,
)
from queueing.drivers.amqp.suspects import ToSuspects, suspects_queue_name
from queueing.drivers.base import Driver, DriverUnavailableError, QueueCounts
from queueing.payload import Envelope


class AmqpDriver(Driver):
    """Publishes envelopes to RabbitMQ queues and hands them to workers."""

    name = DRIVER_NAME

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        username: str = "guest",
        password: str = "guest",
        vhost: str | None = None,
        queue: str = "default",
        url: str | None = None,
        connection_attempts: int = 3,
        heartbeat: int | None = 60,
        prefetch: int = DEFAULT_PREFETCH,
        publish_attempts: int = 3,
        blocked_connection_timeout: float | None = 60.0,
        clock: Clock | None = None,
    ) -> None:
        if int(prefetch) < 1:
            raise ValueError(f"amqp driver: prefetch must be at least 1, not {prefetch!r}")
        if int(publish_attempts) < 1:
            raise ValueError(
                f"amqp driver: publish_attempts must be at least 1, not {publish_attempts!r}"
            )
        if int(connection_attempts) < 1:
            raise ValueError(
                f"amqp driver: connection_attempts must be at least 1, not {connection_attempts!r}"
            )
        self.parameters = connection_parameters(
            host=host,
            port=port,
            username=username,
            password=password,
            vhost=vhost,
            url=url or None,
            connection_attempts=int(connection_attempts),
            heartbeat=None if heartbeat is None else int(heartbeat),
            blocked_connection_timeout=blocked_connection_timeout,
        )
        self.default_queue = queue or "default"
        self.prefetch = int(prefetch)
        self.publish_attempts = int(publish_attempts)
        self.clock = clock or SystemClock()
        # Where the broker is, without credentials, for messages and counts.
        self.where = broker_address(self.parameters)
        self._publishers = Publishers(self.parameters, self.where, self.publish_attempts)
        self._holding = HoldingQueues()
        self._lock = threading.Lock()  # guards `_consumer` and `_handed`
        # Deliveries handed to the worker and not settled yet (async jobs in
        # flight): while any is out, no suspect is taken, so a suspect always
        # runs alone.
        self._handed: set[int] = set()
        self._consumer: Consumer | None = None

    # Pushing ----------------------------------------------------------------------

    def push(self, envelopes: Sequence[Envelope], channel: str | None = None) -> None:
        """Publish every envelope to its queue and wait for the broker's confirms.

        One envelope waits for its own confirm; several are published back to
        back and their confirms awaited together (see `Publisher.publish`).
        After a lost connection, or a message the broker returned or nacked,
        only the envelopes not yet confirmed are published again.
        """
        self._send(envelopes)

    def _send(self, items: Sequence[Envelope | ToSuspects]) -> None:
        """Publish envelopes to their queues and copies to suspects queues, as `push` does."""
        pending = dict(enumerate(items))

        def publish_pending(publisher: Publisher) -> None:
            now = self.clock.now()
            holding: set[str] = set()
            outgoing = {
                key: self._outgoing(publisher, item, now, holding) for key, item in pending.items()
            }
            publisher.publish(outgoing, confirmed=pending.pop)

        self._publishers.run("publishing", publish_pending, lambda: len(pending))

    def _outgoing(
        self,
        publisher: Publisher,
        item: Envelope | ToSuspects,
        now: float,
        holding: set[str],
    ) -> Outgoing:
        """Declare what `item` is routed through and return the message to publish.

        `holding` collects the holding queues declared during this push, so a
        batch of delayed jobs declares each one once. A suspect goes straight
        to its suspects queue, whatever it is due.
        """
        if isinstance(item, ToSuspects):
            suspects = suspects_queue_name(item.envelope.queue)
            publisher.declare(suspects)
            properties = message_properties(item.envelope, now, item.unconfirmed_death)
            return Outgoing(suspects, item.envelope.body, properties)
        envelope = item
        publisher.declare(envelope.queue)
        routing_key = envelope.queue
        delay = holding_delay(envelope.available_at - now)
        if delay:
            routing_key = holding_queue_name(envelope.queue, delay)
            if routing_key not in holding:
                # Declared again before each push that uses it, which restarts
                # its x-expires countdown, so it cannot expire with this message in it.
                publisher.declare(
                    routing_key,
                    arguments=holding_queue_arguments(envelope.queue, delay),
                    remember=False,
                )
                holding.add(routing_key)
                self._holding.add(envelope.queue, routing_key)
        return Outgoing(routing_key, envelope.body, message_properties(envelope, now))

    # Working ----------------------------------------------------------------------

    def reserve(self, queues: Sequence[str], channel: str | None = None) -> Delivery | None:
        """Take a delivered message of the first queue in `queues` that has one, or None.

        Suspects waiting to run alone come first. A redelivered message is
        never run from the queue it came on: it moves to its suspects queue
        (with every other redelivered one buffered), to run alone later. The
        first call starts the consumer thread on `queues`. Raises
        `AmqpUnavailableError` while the consumer is not connected.
        """
        consumer = self._consumer_for(queues)
        consumer.raise_if_down()
        try:
            while True:
                if consumer.suspects_due:
                    if self._handing_out():
                        # The jobs in hand end first; then the suspect runs alone.
                        return None
                    held = self._reserve_suspect(consumer)
                    if held is not None:
                        return self._hand_out(held)
                received = consumer.take(queues)
                if received is None:
                    return None
                if not received.redelivered:
                    return self._hand_out(self._delivery(received, consumer))
                self._give_back(consumer, [received, *consumer.take_redelivered()])
        except (StaleDelivery, amqp.AMQPError, OSError) as error:
            raise AmqpUnavailableError(
                f"lost the consumer connection to RabbitMQ at {self.where}: {describe(error)}"
            ) from error

    def _hand_out(self, delivery: Delivery) -> Delivery:
        with self._lock:
            self._handed.add(id(delivery))
        return delivery

    def _settled(self, delivery: Delivery) -> None:
        with self._lock:
            self._handed.discard(id(delivery))

    def _handing_out(self) -> bool:
        with self._lock:
            return bool(self._handed)

    def _reserve_suspect(self, consumer: Consumer) -> Delivery | None:
        """Hold nothing else, then take the next suspect; None (consuming again) when none waits.

        A suspect delivered again had its run alone end unacknowledged: its
        worker died. That death is certain, and makes its unconfirmed one
        certain too: both are counted in a copy published to the suspects
        queue (then the original is acknowledged), and the next one is taken.
        """
        self._give_back(consumer, consumer.isolate())
        while True:
            received = consumer.take_suspect()
            if received is None:
                consumer.resume()
                return None
            delivery = self._delivery(received, consumer)
            if not received.redelivered:
                return delivery
            again = self._again(delivery.envelope, 0.0, False)
            self._send([ToSuspects.after_certain_death(again, delivery.unconfirmed_death)])
            consumer.acknowledge(delivery)

    def _delivery(self, received: Received, consumer: Consumer) -> Delivery:
        envelope = envelope_from_message(
            received.queue,
            received.properties,
            received.body,
            received.redelivered and received.suspect,
            self.clock.now(),
        )
        headers = received.properties.headers or {}
        return Delivery(
            envelope,
            received.delivery_tag,
            received.generation,
            consumer,
            suspect=received.suspect,
            unconfirmed_death=received.suspect and bool(headers.get(UNCONFIRMED_DEATH_HEADER)),
        )

    def release_unstarted(self) -> int:
        """Stop consuming, and give back the prefetched messages no attempt started.

        Each is published again with its attempts as they were, then the
        original is acknowledged, so a clean stop leaves no redelivered
        message, which would have to run alone as a suspect. Returns how many
        were given back.
        """
        with self._lock:
            consumer = self._consumer
            if consumer is None or consumer.pid != os.getpid():
                return 0
            self._consumer = None  # the next reserve consumes anew
        consumer.pause()
        try:
            return self._give_back(consumer, consumer.take_all())
        finally:
            # Whatever was not given back goes back to the broker unacknowledged.
            consumer.stop()

    def wait_for_jobs(
        self,
        queues: Sequence[str],
        channel: str | None,
        timeout: float,
        wake: threading.Event,
    ) -> None:
        """Block until a message arrives, `timeout` passes or `wake` is set."""
        self._consumer_for(queues).wait(queues, timeout, wake)

    @property
    def extend_every(self) -> float | None:
        """How often the worker calls `extend` while a job runs (None: never)."""
        return LONG_JOB_SECONDS if self.prefetch > 1 else None

    def extend(self, held: Delivery) -> bool:
        """The job in hand runs long: give back the messages prefetched behind it.

        Called by the worker every `extend_every` seconds while a job runs. The
        consumer takes no more messages until a job ends without running long,
        and the buffered ones are published again with their attempts as they
        were (then acknowledged), for other workers to take. False when the
        delivery was lost.
        """
        consumer = held.consumer
        if not consumer.holds(held):
            return False
        self._give_back(consumer, consumer.hold_back(held))
        return consumer.holds(held)

    def _give_back(self, consumer: Consumer, received: Sequence[Received]) -> int:
        """Publish copies of unstarted deliveries, attempts as they were, then ack them.

        A redelivered one goes to its suspects queue, marked as maybe having
        killed its worker. One push carries them all (their confirms awaited
        together); if it fails they go back to the buffer. Returns how many
        were acknowledged; one whose connection was lost meanwhile comes
        again from the broker, flagged redelivered.
        """
        held = [(each, self._delivery(each, consumer)) for each in received]
        held = [(each, delivery) for each, delivery in held if consumer.holds(delivery)]
        if not held:
            return 0
        copies: list[Envelope | ToSuspects] = []
        for each, delivery in held:
            copy = self._again(delivery.envelope, 0.0, False)
            copies.append(ToSuspects(copy, True) if each.redelivered else copy)
        try:
            self._send(copies)
        except DriverUnavailableError:
            # Not given back: they stay for this worker (some may now be
            # queued twice: at least once).
            consumer.put_back([each for each, _ in held])
            raise
        if any(each.redelivered for each, _ in held):
            consumer.expect_suspects()
        return sum(consumer.acknowledge(delivery) for _, delivery in held)

    def acknowledge(self, held: Delivery) -> bool:
        """The job is done: acknowledge its message; False if its delivery was lost."""
        self._settled(held)
        return held.consumer.acknowledge(held)

    def bury(self, held: Delivery) -> bool:
        """The job failed for good or was parked, and is stored: acknowledge its message."""
        self._settled(held)
        return held.consumer.acknowledge(held)

    def release(self, held: Delivery, delay: float = 0.0, count_attempt: bool = True) -> bool:
        """Publish the job again, due in `delay` seconds, then acknowledge the original.

        With `count_attempt=False` (the worker stopped mid-job) the attempt is
        given back, and a suspect goes back to its suspects queue as it was. A
        retry goes to the job's queue: its attempt ended with an outcome, so
        it killed no worker. False when the delivery was lost (the broker
        delivers the original again), and then nothing is published.
        """
        self._settled(held)
        if not held.consumer.holds(held):
            return False
        again = self._again(held.envelope, delay, count_attempt)
        if held.suspect and not count_attempt:
            self._send([ToSuspects(again, held.unconfirmed_death)])
        else:
            self._send([again])
        return held.consumer.acknowledge(held)

    def _again(self, envelope: Envelope, delay: float, count_attempt: bool) -> Envelope:
        """The copy of `envelope` to publish for another attempt, due in `delay` seconds."""
        attempts = envelope.attempts if count_attempt else envelope.attempts - 1
        return replace(
            envelope, available_at=self.clock.now() + max(0.0, delay), attempts=max(0, attempts)
        )

    def waiting(self, queues: Sequence[str], channel: str | None = None) -> bool:
        """Say whether `queues` hold a message: ready, suspect, or in a holding queue used here."""
        consumer = self._consumer
        if consumer is not None and consumer.serves(queues):
            if consumer.waiting(queues):
                return True
        elif any(
            self._message_count(name)
            for queue in queues
            for name in (queue, suspects_queue_name(queue))
        ):
            return True
        return any(self._message_count(name) for name in self._holding.of(queues))

    # Operators --------------------------------------------------------------------

    def counts(self, channel: str | None = None) -> list[QueueCounts]:
        """Return the counts of the channel's queue (see the package's notes on counting)."""
        queue = self.queue_for(channel, None)
        pending = self._message_count(queue)
        if pending is None:
            return []
        pending += self._message_count(suspects_queue_name(queue)) or 0
        delayed = sum(self._message_count(name) or 0 for name in self._holding.of([queue]))
        return [
            QueueCounts(
                connection=self.where,
                queue=queue,
                pending=pending,
                delayed=delayed,
                reserved=0,
                oldest_pending_age=None,
            )
        ]

    def clear_question(self, queue: str | None = None, channel: str | None = None) -> str:
        """The question an operator confirms before `clear` with these arguments.

        RabbitMQ purges one named queue; a new process knows none of the
        holding queues where delayed jobs wait, so those are left alone.
        """
        return (
            f"Delete the ready jobs of queue {self.queue_for(channel, queue)!r} on amqp "
            f"({self.where})? Delayed jobs in its holding queues are kept."
        )

    def clear(self, queue: str | None = None, channel: str | None = None) -> int:
        """Purge the ready messages of the queue, its suspects and the holding queues known here."""
        name = self.queue_for(channel, queue)
        names = [name, suspects_queue_name(name), *self._holding.of([name])]

        def purge(publisher: Publisher) -> int:
            purged = 0
            for each in names:
                try:
                    purged += publisher.channel.queue_purge(each).method.message_count
                except amqp.ChannelClosedByBroker as error:
                    if error.reply_code != 404:
                        raise
                    publisher.reopen_channel()
            return purged

        return self._publishers.run("purging queues", purge)

    def check(self, channel: str | None = None) -> None:
        """Raise `AmqpUnavailableError` unless the broker answers; declare the channel's queue."""
        queue = self.queue_for(channel, None)
        self._publishers.run("declaring a queue", lambda publisher: publisher.declare(queue))

    def close(self) -> None:
        """Stop the consumer and close the publishing connections that can be closed here.

        A connection of a thread that still runs belongs to that thread, and
        closes when it ends.
        """
        with self._lock:
            consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.stop()
        self._publishers.close()

    # Connections ------------------------------------------------------------------

    def _message_count(self, queue: str) -> int | None:
        """Return the ready messages of `queue`, or None when it does not exist."""

        def count(publisher: Publisher) -> int | None:
            try:
                return publisher.channel.queue_declare(queue, passive=True).method.message_count
            except amqp.ChannelClosedByBroker as error:
                if error.reply_code != 404:
                    raise
                publisher.reopen_channel()
                self._holding.forget(queue)
                return None

        return self._publishers.run("counting messages", count)

    def _consumer_for(self, queues: Sequence[str]) -> Consumer:
        with self._lock:
            consumer = self._consumer
            if consumer is not None and consumer.pid == os.getpid() and consumer.serves(queues):
                return consumer
            self._consumer = Consumer(self.parameters, queues, self.prefetch, self.where)
        if consumer is not None and consumer.pid == os.getpid():
            consumer.stop()
        return self._consumer
