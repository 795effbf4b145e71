"""The `amqp` driver: jobs as persistent messages on RabbitMQ, through pika.

Pushing. Each thread that pushes owns one `BlockingConnection` (pika's
connections are not thread-safe), opened on its first push and reused for
every push after it. Queues are durable and declared by whoever uses them
first, pusher or worker; messages are persistent (`delivery_mode=2`) and
published with `mandatory=True` on a channel in confirm mode, so `push()`
returns only once the broker has confirmed every message, and an unroutable
or nacked message raises `PublishRefusedError`. One job waits for its own
confirm; `push(*jobs)` publishes its messages back to back, up to
`CONFIRM_WINDOW` awaiting their confirms at once, and returns when the last
is confirmed, so a batch costs about one round trip per window, not one per
job. A lost connection is reopened
and the unconfirmed messages published again, `publish_attempts` times in
all; then `AmqpUnavailableError` says which broker and why. (A message whose
confirm was lost with the connection is sent again, so a job may be queued
twice, never lost: delivery is at least once.)

Message layout. The body is the envelope's signed body, untouched (the HMAC
that `queueing.payload` puts in front of the pickle is the signature); the
metadata the worker needs without unpickling travels in properties
(`message_id` is the job id, `type` the job name, `timestamp`) and headers
(`job-attempts`, `job-created`, `job-available-at-ms`, `job-signature`, a
copy of the body's HMAC for operators: the worker checks the one inside the
body; `job-name` when the name is too long for `type`; and
`job-unconfirmed-death` on a suspect, below). The queue is the one the
message is consumed from, or whose suspects queue it is.

Working. A worker's deliveries come from a consumer connection driven by a
background thread, which only moves frames: it keeps heartbeats flowing and
puts deliveries on a local buffer that `reserve()` takes from, while the job
itself runs in the worker's thread. Acknowledgements go back to the consumer
thread with `add_callback_threadsafe`, and only after the job settled: done,
failed and stored, or parked. QoS `prefetch` (default 1) bounds how many
unacknowledged messages a worker holds, so a worker killed mid-job leaves its
message to be delivered again. Acknowledgements queued together go out as
one `multiple` acknowledgement when they settle a run of delivery tags. A job
running longer than `LONG_JOB_SECONDS` has the messages prefetched behind it
given back (`extend`), so other workers run them meanwhile.

Attempts. `job-attempts` counts the attempts started before the message was
published; `reserve()` adds the one about to run. A message that comes back
`redelivered` had a delivery end unacknowledged: its worker died with it in
hand, or it only sat in a prefetch buffer (its own or pika's) when the
connection closed; the flag cannot tell which. So such a message is never
run from its queue: it is published to `<queue>.suspects` with its attempts
as they were and `job-unconfirmed-death`, then acknowledged. A worker runs
suspects alone: with a suspect waiting (it looks on connecting and every
`SUSPECT_CHECK_SECONDS`), it cancels its consumers, gives back what it had
prefetched, takes one suspect with `basic_get` and holds nothing else while
it runs, until `basic_get` finds none. A suspect redelivered is therefore a
certain death: it is published again with that attempt counted, and its
unconfirmed death counted too (a job that kills its worker alone is taken
to have killed the one before), then acknowledged. So a prefetched job
loses no attempt, and a job that kills every worker is seen dead by the
runner after `run_times` deaths when it has two attempts or more; with one
(a plain function), it dies twice: once with its neighbours, once alone. A
suspect whose run ends with an outcome (done, retry, failed) is settled as
any job; a retry goes back to its queue.

Delays (`wait=` and retry delays) never block a queue: a message due later
goes to a holding queue `<queue>.delay.<ms>` whose messages all live `<ms>`
milliseconds (`x-message-ttl`) and are then dead-lettered into `<queue>`.
Every message of one holding queue has the same lifetime, so none waits
behind a longer one. Delays are rounded up by at most about 1%
(`holding_delay`) to keep the number of holding queues small without ever
running a job before it is due, and an idle holding queue deletes itself
a minute after its last message is due (`x-expires`). A retry publishes the
same signed body (the job's state included) to its holding queue with the
attempts in the headers, and acknowledges the original only once the broker
confirmed the copy.

RabbitMQ's `consumer_timeout` (30 minutes by default) closes the channel of a
consumer that holds a message unacknowledged for longer. A job running past
it loses its delivery: the broker requeues the message, the consumer thread
reconnects, the job's acknowledgement is dropped (the worker logs that its
lease was lost) and the job runs again. Set `consumer_timeout` in
rabbitmq.conf above your longest job (in milliseconds), or keep jobs shorter
with `craft queue:work --timeout`.

Broker restarts. The consumer thread reconnects with a backoff of up to 5
seconds; meanwhile `reserve()` raises `AmqpUnavailableError`, which the worker
reports before it waits and tries again. Deliveries of the lost connection are
dropped from the buffer (the broker delivers them again), and acknowledging
one returns False, as a lost database lease does.

Counting. AMQP can ask a queue for its ready messages, but cannot list queues
nor count unacknowledged messages, so `counts()` reports `pending` (ready
messages of the channel's queue and of its suspects queue), `reserved` 0,
and `delayed` only for the holding queues this process has used: 0 from a
fresh `craft queue:status`.
RabbitMQ's management UI or `rabbitmqctl list_queues name messages_ready
messages_unacknowledged` show the rest.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import functools
import itertools
import logging
import math
import os
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import pika
import pika.exceptions as amqp

from queueing.clock import Clock, SystemClock
from queueing.drivers.base import Driver, DriverUnavailableError
from queueing.drivers.database import QueueCounts
from queueing.payload import Envelope, signature_of

logger = logging.getLogger("queueing.amqp")

T = TypeVar("T")

DEFAULT_PORT = 5672
# Messages a worker holds unacknowledged per queue: the one running and those
# already on their way to it.
DEFAULT_PREFETCH = 100
DEFAULT_VHOST = "/"
# The longest AMQP short string (the `type` property).
SHORT_STRING_BYTES = 255
# An idle holding queue outlives its last message by this long before the
# broker deletes it; every delayed publish declares it again first.
HOLDING_QUEUE_SLACK_MS = 60_000
# How far below a step a delay may fall and still be rounded down to it.
FLOAT_SLACK_MS = 0.01
# Seconds the consumer thread blocks in pika's I/O loop per turn; threadsafe
# callbacks (acknowledgements) wake it at once, so this only bounds shutdown.
POLL_SECONDS = 0.2
RECONNECT_MIN_SECONDS = 0.5
RECONNECT_MAX_SECONDS = 5.0
# How long `waiting()` lets a delivery on its way arrive before it asks the broker.
BUFFER_GRACE_SECONDS = 0.05
# A job running this long has the messages prefetched behind it given back.
LONG_JOB_SECONDS = 1.0
# A publisher idle this long reads what the broker sent before its next publish.
IDLE_CHECK_SECONDS = 1.0
# How many messages of one push may await their confirm at once.
CONFIRM_WINDOW = 256
# How long a worker call handed to the consumer thread may take.
CALL_TIMEOUT_SECONDS = 30.0
# How often the consumer thread looks for suspects waiting to run alone.
SUSPECT_CHECK_SECONDS = 2.0
# Set on a suspect whose delivery before it may or may not have been a death.
UNCONFIRMED_DEATH_HEADER = "job-unconfirmed-death"
# Errors after which retrying cannot help: wrong credentials, unknown or forbidden vhost.
REFUSED_LOGIN = (
    amqp.AuthenticationError,
    amqp.ProbableAuthenticationError,
    amqp.ProbableAccessDeniedError,
)
# Errors a new connection may cure.
CONNECTION_ERRORS = (amqp.AMQPConnectionError, amqp.ChannelWrongStateError, OSError)


class AmqpUnavailableError(DriverUnavailableError):
    """RabbitMQ cannot be reached, or refused the login."""


class PublishRefusedError(DriverUnavailableError):
    """RabbitMQ refused a message or a queue: unroutable, nacked, or an error reply."""

    retryable = False


@dataclass(frozen=True)
class Delivery:
    """A message a worker holds: its envelope and the delivery to acknowledge.

    `suspect` says it was taken alone from its queue's suspects queue, and
    `unconfirmed_death` that its delivery before that may have been a death
    (see the module's notes on attempts).
    """

    envelope: Envelope
    delivery_tag: int
    generation: int
    consumer: _Consumer = field(repr=False, compare=False)
    suspect: bool = False
    unconfirmed_death: bool = False


def connection_parameters(
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    username: str = "guest",
    password: str = "guest",
    vhost: str | None = None,
    url: str | None = None,
    connection_attempts: int = 3,
    heartbeat: int | None = 60,
    blocked_connection_timeout: float | None = 60.0,
) -> pika.ConnectionParameters | pika.URLParameters:
    """Return pika's parameters from the settings; `url` wins over the parts.

    From parts, the credentials are handed to pika as they are, never put
    into a URL, so any character is safe; `port` None means 5672 and `vhost`
    None means "/". A URL must percent-encode them itself; settings its query
    string does not give (`heartbeat`, `connection_attempts`,
    `blocked_connection_timeout`) are taken from the arguments.
    """
    if url:
        parameters = pika.URLParameters(url)
        given = parse_qs(urlsplit(url).query)
        if "heartbeat" not in given:
            parameters.heartbeat = heartbeat
        if "connection_attempts" not in given:
            parameters.connection_attempts = connection_attempts
        if "blocked_connection_timeout" not in given:
            parameters.blocked_connection_timeout = blocked_connection_timeout
        return parameters
    return pika.ConnectionParameters(
        host=host,
        port=DEFAULT_PORT if port is None else int(port),
        virtual_host=vhost or DEFAULT_VHOST,
        credentials=pika.PlainCredentials(username, password),
        heartbeat=heartbeat,
        connection_attempts=connection_attempts,
        retry_delay=0.5,
        blocked_connection_timeout=blocked_connection_timeout,
    )


def holding_delay(seconds: float) -> int:
    """Return the milliseconds a message due in `seconds` spends in a holding queue.

    The delay is rounded up to a multiple of the power of ten of milliseconds
    that is about 1% of it (1 s -> steps of 10 ms, 10 minutes -> steps of
    1 s), so pushes a few milliseconds apart share a holding queue and none
    leaves it before it is due. Delays just short of a power of ten take the
    next step up, so `wait=1`, published 3 ms after it was computed, still
    becomes 1000 ms. 0 means due now.
    """
    milliseconds = seconds * 1000
    if milliseconds < 0.5:
        return 0
    step = 10 ** max(0, math.floor(math.log10(milliseconds * 1.02)) - 2)
    # Epoch seconds subtract with an error of a few ten-thousandths of a
    # millisecond; without this slack an exact 1000 ms could become 1010.
    return math.ceil((milliseconds - FLOAT_SLACK_MS) / step) * step


def holding_queue_name(queue: str, milliseconds: int) -> str:
    """Return the name of the holding queue that delays messages of `queue`."""
    return f"{queue}.delay.{milliseconds}"


def suspects_queue_name(queue: str) -> str:
    """Return the name of the queue where redelivered messages of `queue` wait to run alone."""
    return f"{queue}.suspects"


def message_properties(
    envelope: Envelope, now: float, unconfirmed_death: bool = False
) -> pika.BasicProperties:
    """Return the persistent message properties that carry `envelope`'s metadata.

    The id and the job name are properties (`message_id`, `type`); a name
    longer than `type` holds (255 bytes) travels whole in `job-name`.
    `unconfirmed_death` marks a suspect whose last delivery may have killed
    its worker.
    """
    name = envelope.name.encode()
    headers: dict[str, Any] = {
        "job-attempts": envelope.attempts,
        "job-created": envelope.created,
        # pika encodes no floats: epoch milliseconds.
        "job-available-at-ms": round(envelope.available_at * 1000),
        "job-signature": signature_of(envelope.body),
    }
    if len(name) > SHORT_STRING_BYTES:
        headers["job-name"] = envelope.name
    if unconfirmed_death:
        headers[UNCONFIRMED_DEATH_HEADER] = 1
    return pika.BasicProperties(
        delivery_mode=pika.DeliveryMode.Persistent,
        content_type="application/octet-stream",
        message_id=envelope.id,
        type=name[:SHORT_STRING_BYTES].decode(errors="ignore"),
        timestamp=int(now),
        headers=headers,
    )


def envelope_from_message(
    queue: str,
    properties: pika.BasicProperties,
    body: bytes,
    redelivered: bool,
    now: float,
) -> Envelope:
    """Read a delivered message back into an envelope counting the attempt about to run.

    `redelivered` says the delivery before this one ended unacknowledged
    while the job was in hand (its worker died), which counts as an attempt
    too: only a message taken alone from a suspects queue can say that. A
    message someone else wrote may lack our headers: what is missing gets a
    neutral value, and the runner refuses the body when it checks it.
    """
    headers = properties.headers or {}
    attempts = _integer(headers.get("job-attempts")) + 1 + (1 if redelivered else 0)
    return Envelope(
        id=_text(properties.message_id) or uuid.uuid4().hex,
        name=_text(headers.get("job-name")) or _text(properties.type) or "unknown",
        queue=queue,
        driver=AmqpDriver.name,
        created=_text(headers.get("job-created")),
        available_at=_number(headers.get("job-available-at-ms"), now * 1000) / 1000,
        body=bytes(body or b""),
        attempts=attempts,
    )


class AmqpDriver(Driver):
    """Publishes envelopes to RabbitMQ queues and hands them to workers."""

    name = "amqp"

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
        self.where = f"{self.parameters.host}:{self.parameters.port}{_vhost_path(self.parameters)}"
        self._local = threading.local()
        self._publishers: list[_Publisher] = []
        self._holding: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._consumer: _Consumer | None = None

    # Pushing ----------------------------------------------------------------------

    def push(self, envelopes: Sequence[Envelope], channel: str | None = None) -> None:
        """Publish every envelope to its queue and wait for the broker's confirms.

        One envelope waits for its own confirm; several are published back to
        back and their confirms awaited together (see `_Publisher.publish`).
        After a lost connection, or a message the broker returned or nacked,
        only the envelopes not yet confirmed are published again.
        """
        self._send(envelopes)

    def _send(self, items: Sequence[Envelope | _ToSuspects]) -> None:
        """Publish envelopes to their queues and copies to suspects queues, as `push` does."""
        pending = dict(enumerate(items))

        def publish_pending(publisher: _Publisher) -> None:
            now = self.clock.now()
            holding: set[str] = set()
            outgoing = {
                key: self._outgoing(publisher, item, now, holding) for key, item in pending.items()
            }
            publisher.publish(outgoing, confirmed=pending.pop)

        self._with_publisher("publishing", publish_pending, lambda: len(pending))

    def _outgoing(
        self,
        publisher: _Publisher,
        item: Envelope | _ToSuspects,
        now: float,
        holding: set[str],
    ) -> _Outgoing:
        """Declare what `item` is routed through and return the message to publish.

        `holding` collects the holding queues declared during this push, so a
        batch of delayed jobs declares each one once. A suspect goes straight
        to its suspects queue, whatever it is due.
        """
        if isinstance(item, _ToSuspects):
            suspects = suspects_queue_name(item.envelope.queue)
            publisher.declare(suspects)
            properties = message_properties(item.envelope, now, item.unconfirmed_death)
            return _Outgoing(suspects, item.envelope.body, properties)
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
                    arguments={
                        "x-message-ttl": delay,
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": envelope.queue,
                        "x-expires": delay + HOLDING_QUEUE_SLACK_MS,
                    },
                    remember=False,
                )
                holding.add(routing_key)
                with self._lock:
                    self._holding.setdefault(envelope.queue, set()).add(routing_key)
        return _Outgoing(routing_key, envelope.body, message_properties(envelope, now))

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
                    held = self._reserve_suspect(consumer)
                    if held is not None:
                        return held
                received = consumer.take(queues)
                if received is None:
                    return None
                if not received.redelivered:
                    return self._delivery(received, consumer)
                self._give_back(consumer, [received, *consumer.take_redelivered()])
        except (_StaleDelivery, amqp.AMQPError, OSError) as error:
            raise AmqpUnavailableError(
                f"lost the consumer connection to RabbitMQ at {self.where}: {_describe(error)}"
            ) from error

    def _reserve_suspect(self, consumer: _Consumer) -> Delivery | None:
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
            counted = self._again(delivery.envelope, 0.0, False)
            counted = replace(counted, attempts=counted.attempts + delivery.unconfirmed_death)
            self._send([_ToSuspects(counted, unconfirmed_death=False)])
            consumer.acknowledge(delivery)

    def _delivery(self, received: _Received, consumer: _Consumer) -> Delivery:
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

    def _give_back(self, consumer: _Consumer, received: Sequence[_Received]) -> int:
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
        copies: list[Envelope | _ToSuspects] = []
        for each, delivery in held:
            copy = self._again(delivery.envelope, 0.0, False)
            copies.append(_ToSuspects(copy, True) if each.redelivered else copy)
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
        return held.consumer.acknowledge(held)

    def bury(self, held: Delivery) -> bool:
        """The job failed for good or was parked, and is stored: acknowledge its message."""
        return held.consumer.acknowledge(held)

    def release(self, held: Delivery, delay: float = 0.0, count_attempt: bool = True) -> bool:
        """Publish the job again, due in `delay` seconds, then acknowledge the original.

        With `count_attempt=False` (the worker stopped mid-job) the attempt is
        given back, and a suspect goes back to its suspects queue as it was. A
        retry goes to the job's queue: its attempt ended with an outcome, so
        it killed no worker. False when the delivery was lost (the broker
        delivers the original again), and then nothing is published.
        """
        if not held.consumer.holds(held):
            return False
        again = self._again(held.envelope, delay, count_attempt)
        if held.suspect and not count_attempt:
            self._send([_ToSuspects(again, held.unconfirmed_death)])
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
        return any(self._message_count(name) for name in self._holding_queues(queues))

    # Operators --------------------------------------------------------------------

    def counts(self, channel: str | None = None) -> list[QueueCounts]:
        """Return the counts of the channel's queue (see the module's notes on counting)."""
        queue = self.queue_for(channel, None)
        pending = self._message_count(queue)
        if pending is None:
            return []
        pending += self._message_count(suspects_queue_name(queue)) or 0
        delayed = sum(self._message_count(name) or 0 for name in self._holding_queues([queue]))
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
        names = [name, suspects_queue_name(name), *self._holding_queues([name])]

        def purge(publisher: _Publisher) -> int:
            purged = 0
            for each in names:
                try:
                    purged += publisher.channel.queue_purge(each).method.message_count
                except amqp.ChannelClosedByBroker as error:
                    if error.reply_code != 404:
                        raise
                    publisher.reopen_channel()
            return purged

        return self._with_publisher("purging queues", purge)

    def check(self, channel: str | None = None) -> None:
        """Raise `AmqpUnavailableError` unless the broker answers; declare the channel's queue."""
        queue = self.queue_for(channel, None)
        self._with_publisher("declaring a queue", lambda publisher: publisher.declare(queue))

    def close(self) -> None:
        """Stop the consumer and close the publishing connections that can be closed here.

        A connection of a thread that still runs belongs to that thread, and
        closes when it ends.
        """
        with self._lock:
            consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.stop()
        current = threading.current_thread()
        with self._lock:
            closable = [
                publisher
                for publisher in self._publishers
                if publisher.thread is current or not publisher.thread.is_alive()
            ]
            self._publishers = [p for p in self._publishers if p not in closable]
        for publisher in closable:
            publisher.close()
        self._local.__dict__.pop("publisher", None)

    # Connections ------------------------------------------------------------------

    def _publisher(self) -> _Publisher:
        publisher: _Publisher | None = getattr(self._local, "publisher", None)
        if publisher is not None and publisher.usable():
            return publisher
        if publisher is not None:
            self._drop_publisher()
        publisher = _Publisher(self.parameters)
        self._local.publisher = publisher
        with self._lock:
            self._publishers.append(publisher)
        return publisher

    def _drop_publisher(self) -> None:
        publisher: _Publisher | None = self._local.__dict__.pop("publisher", None)
        if publisher is None:
            return
        with self._lock:
            if publisher in self._publishers:
                self._publishers.remove(publisher)
        publisher.close()

    def _with_publisher(
        self,
        what: str,
        action: Callable[[_Publisher], T],
        unsent: Callable[[], int] | None = None,
    ) -> T:
        """Run `action` on this thread's publisher, reconnecting on a lost connection.

        `action` must be safe to run again after a failure (push keeps track
        of what is confirmed). Errors become `AmqpUnavailableError` or
        `PublishRefusedError` with the broker's address and reason.
        """
        failures = 0
        while True:
            publisher: _Publisher | None = None
            try:
                publisher = self._publisher()
                return action(publisher)
            except (amqp.UnroutableError, amqp.NackError) as error:
                # Unroutable: the queue vanished after it was declared here;
                # declaring it again is worth a try, as is a nacked publish.
                failures += 1
                if publisher is not None:
                    publisher.forget_declarations()
                if failures >= self.publish_attempts:
                    raise PublishRefusedError(
                        f"RabbitMQ at {self.where} did not take the message "
                        f"({_describe(error)}) after {failures} attempt(s)" + _unsent(unsent)
                    ) from error
            except amqp.ChannelClosedByBroker as error:
                if publisher is not None:
                    # If the connection died too, the refusal is still the
                    # error to report; the next use replaces the publisher.
                    with contextlib.suppress(*CONNECTION_ERRORS):
                        publisher.reopen_channel()
                raise PublishRefusedError(
                    f"RabbitMQ at {self.where} refused {what}: "
                    f"{error.reply_code} {error.reply_text}" + _unsent(unsent)
                ) from error
            except REFUSED_LOGIN as error:
                self._drop_publisher()
                raise AmqpUnavailableError(
                    f"RabbitMQ at {self.where} refused the login: {_describe(error)} "
                    "(check the amqp username, password and vhost)" + _unsent(unsent)
                ) from error
            except CONNECTION_ERRORS as error:
                self._drop_publisher()
                failures += 1
                if failures >= self.publish_attempts:
                    raise AmqpUnavailableError(
                        f"cannot reach RabbitMQ at {self.where} ({what}) after {failures} "
                        f"attempt(s): {_describe(error)}" + _unsent(unsent)
                    ) from error
                logger.warning(
                    "lost the connection to RabbitMQ at %s (%s); trying again",
                    self.where,
                    _describe(error),
                )
            time.sleep(min(2.0, 0.25 * 2**failures))

    def _message_count(self, queue: str) -> int | None:
        """Return the ready messages of `queue`, or None when it does not exist."""

        def count(publisher: _Publisher) -> int | None:
            try:
                return publisher.channel.queue_declare(queue, passive=True).method.message_count
            except amqp.ChannelClosedByBroker as error:
                if error.reply_code != 404:
                    raise
                publisher.reopen_channel()
                self._forget_holding(queue)
                return None

        return self._with_publisher("counting messages", count)

    def _holding_queues(self, queues: Sequence[str]) -> list[str]:
        with self._lock:
            return sorted(name for queue in queues for name in self._holding.get(queue, ()))

    def _forget_holding(self, name: str) -> None:
        with self._lock:
            for names in self._holding.values():
                names.discard(name)

    def _consumer_for(self, queues: Sequence[str]) -> _Consumer:
        with self._lock:
            consumer = self._consumer
            if consumer is not None and consumer.pid == os.getpid() and consumer.serves(queues):
                return consumer
            self._consumer = _Consumer(self.parameters, queues, self.prefetch, self.where)
        if consumer is not None and consumer.pid == os.getpid():
            consumer.stop()
        return self._consumer


@dataclass(frozen=True, slots=True)
class _ToSuspects:
    """A copy of a job for its queue's suspects queue (see the module's notes on attempts)."""

    envelope: Envelope
    unconfirmed_death: bool


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """One message ready to publish: where to, the body, the properties."""

    routing_key: str
    body: bytes
    properties: pika.BasicProperties


class _Publisher:
    """One thread's publishing connection, its confirm-mode channels and its declared queues.

    `channel` is pika's blocking channel in confirm mode: each publish on it
    waits for its own confirm. A push of several messages uses a second
    channel, `_batch`, on which confirm mode is turned on underneath pika's
    blocking layer (its `_impl` channel), so that messages go out back to back
    and their confirms are counted here as they arrive (`_on_confirm`).
    """

    def __init__(self, parameters: pika.ConnectionParameters | pika.URLParameters) -> None:
        self.pid = os.getpid()
        self.thread = threading.current_thread()
        self.connection = pika.BlockingConnection(
            _named(parameters, f"queueing publisher {self.pid}")
        )
        self.declared: set[str] = set()
        self.last_used = time.monotonic()
        self._batch: Any = None
        self._batch_closed: BaseException | None = None
        # Delivery tags of the batch channel not confirmed yet, with the key
        # of each message; tags count the channel's publishes from 1.
        self._unconfirmed: dict[int, Any] = {}
        self._next_tag = 1
        self._returned: set[str] = set()
        self._refused: list[tuple[Any, str]] = []
        self._confirmed: Callable[[Any], Any] = _ignore
        self._wake_below = 0
        try:
            self.channel = self._open_channel()
        except BaseException:
            self.close()
            raise

    def _open_channel(self) -> Any:
        channel = self.connection.channel()
        channel.confirm_delivery()
        return channel

    def usable(self) -> bool:
        """Say whether this connection is open, in this process.

        After an idle spell, reading what the broker sent meanwhile answers its
        heartbeats and notices a connection it closed (say, after missed
        heartbeats during a long job), so that one is replaced before a
        publish fails on it. Between pushes in quick succession the publish
        itself does that reading.
        """
        if self.pid != os.getpid() or not self.connection.is_open:
            return False
        if time.monotonic() - self.last_used >= IDLE_CHECK_SECONDS:
            try:
                self.connection.process_data_events(0)
            except (amqp.AMQPError, OSError):
                return False
        return self.connection.is_open and self.channel.is_open

    def publish(self, outgoing: dict[Any, _Outgoing], confirmed: Callable[[Any], Any]) -> None:
        """Publish every message of `outgoing`, calling `confirmed(key)` as each is confirmed.

        Returns when all are confirmed. A message the broker returned
        (unroutable) or nacked is not confirmed: once every confirm is in,
        pika's `UnroutableError` or `NackError` is raised for them. A lost
        connection raises as it happens; what was not confirmed by then is
        left to the caller to publish again.
        """
        try:
            if len(outgoing) == 1:
                ((key, message),) = outgoing.items()
                self.channel.basic_publish(
                    exchange="",
                    routing_key=message.routing_key,
                    body=message.body,
                    properties=message.properties,
                    mandatory=True,
                )
                confirmed(key)
            elif outgoing:
                self._publish_batch(outgoing, confirmed)
        finally:
            self.last_used = time.monotonic()

    def _publish_batch(
        self, outgoing: dict[Any, _Outgoing], confirmed: Callable[[Any], Any]
    ) -> None:
        channel = self._batch_channel()
        self._confirmed = confirmed
        self._returned.clear()
        self._refused.clear()
        try:
            for key, message in outgoing.items():
                if len(self._unconfirmed) >= CONFIRM_WINDOW:
                    self._await_confirms(CONFIRM_WINDOW // 2)
                channel.basic_publish(
                    exchange="",
                    routing_key=message.routing_key,
                    body=message.body,
                    properties=message.properties,
                    mandatory=True,
                )
                self._unconfirmed[self._next_tag] = (key, message.properties.message_id)
                self._next_tag += 1
            self._await_confirms(0)
        except BaseException:
            # The channel's count of tags is no longer ours to follow.
            self._drop_batch_channel()
            raise
        finally:
            self._confirmed = _ignore
        if self._refused:
            refused, self._refused = self._refused, []
            nacked = [key for key, reason in refused if reason == "nack"]
            if nacked:
                # pika's errors count what they are given.
                raise amqp.NackError(nacked)
            raise amqp.UnroutableError([key for key, _ in refused])

    def _batch_channel(self) -> Any:
        """The channel batches are published on (pika's channel under a blocking one)."""
        if self._batch is not None and self._batch.is_open and self._batch_closed is None:
            return self._batch._impl
        self._drop_batch_channel()
        blocking = self.connection.channel()
        channel = blocking._impl
        selected: list[Any] = []

        def on_selected(frame: Any) -> None:
            selected.append(frame)
            self._wake()

        channel.add_on_return_callback(self._on_return)
        channel.add_on_close_callback(self._on_batch_closed)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=on_selected)
        while not selected:
            self._wait()
        self._batch, self._next_tag = blocking, 1
        return channel

    def _drop_batch_channel(self) -> None:
        batch, self._batch = self._batch, None
        self._batch_closed = None
        self._unconfirmed.clear()
        if batch is not None and batch.is_open:
            with contextlib.suppress(amqp.AMQPError, OSError):
                batch.close()

    def _await_confirms(self, at_most: int) -> None:
        """Process the broker's frames until at most `at_most` messages await their confirm."""
        self._wake_below = at_most + 1
        while len(self._unconfirmed) > at_most:
            self._wait()

    def _wait(self) -> None:
        """Process frames until a callback here asks to stop (`_wake`) or the channel closed."""
        if self._batch_closed is not None:
            raise self._batch_closed
        self.connection.process_data_events(time_limit=None)
        if self._batch_closed is not None:
            raise self._batch_closed

    def _wake(self) -> None:
        # A zero-delay timer is an event of the blocking connection, which
        # ends the `process_data_events` call that `_wait` is in.
        self.connection.call_later(0, _ignore)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        if method.multiple:
            # Tags are kept in publishing order: every one up to this tag.
            tags = list(
                itertools.takewhile(lambda tag: tag <= method.delivery_tag, self._unconfirmed)
            )
        else:
            tags = [method.delivery_tag] if method.delivery_tag in self._unconfirmed else []
        nacked = isinstance(method, pika.spec.Basic.Nack)
        for tag in tags:
            key, message_id = self._unconfirmed.pop(tag)
            self._settle(key, message_id, nacked)
        if len(self._unconfirmed) < self._wake_below:
            self._wake()

    def _settle(self, key: Any, message_id: str | None, nacked: bool) -> None:
        if nacked:
            self._refused.append((key, "nack"))
        elif message_id is not None and message_id in self._returned:
            self._refused.append((key, "unroutable"))
        else:
            self._confirmed(key)

    def _on_return(self, _channel: Any, _method: Any, properties: Any, _body: bytes) -> None:
        # The broker returns an unroutable message before it confirms it.
        self._returned.add(properties.message_id)

    def _on_batch_closed(self, _channel: Any, reason: BaseException) -> None:
        self._batch_closed = reason
        self._wake()

    def declare(
        self, queue: str, arguments: dict[str, Any] | None = None, remember: bool = True
    ) -> None:
        """Declare a durable queue, once per connection when `remember`."""
        if remember and queue in self.declared:
            return
        self.channel.queue_declare(queue, durable=True, arguments=arguments)
        if remember:
            self.declared.add(queue)

    def forget_declarations(self) -> None:
        """Declare queues again on their next use."""
        self.declared.clear()

    def reopen_channel(self) -> None:
        """Open new channels for those the broker closed with an error."""
        self.declared.clear()
        if self._batch is not None and (not self._batch.is_open or self._batch_closed):
            self._drop_batch_channel()
        if self.connection.is_open and not self.channel.is_open:
            self.channel = self._open_channel()

    def close(self) -> None:
        """Close the connection, unless it was inherited from a parent process."""
        if self.pid != os.getpid():
            return
        try:
            if self.connection.is_open:
                self.connection.close()
        except (amqp.AMQPError, OSError) as error:
            logger.debug("closing an amqp publisher: %s", error)


def _ignore(*_: Any) -> None:
    """A callback that does nothing."""


@dataclass(frozen=True)
class _Received:
    """A delivery as the consumer thread read it; `suspect`: taken from `queue`'s suspects queue."""

    queue: str
    delivery_tag: int
    redelivered: bool
    properties: pika.BasicProperties
    body: bytes
    generation: int
    suspect: bool = False


class _Call:
    """A function to run on the consumer thread, and its outcome."""

    def __init__(self, function: Callable[[], Any]) -> None:
        self.function = function
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.function()
        except BaseException as error:  # handed to the waiting thread
            self.error = error
        finally:
            self.done.set()


class _StaleDelivery(Exception):
    """The connection a delivery came on is gone."""


class _Consumer:
    """A consumer connection owned by a background thread, which only moves frames.

    Every connection it opens has a new generation number; a delivery is
    acknowledged only on the connection (generation) it came on.
    """

    def __init__(
        self,
        parameters: pika.ConnectionParameters | pika.URLParameters,
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
        self._buffer: dict[str, deque[_Received]] = {queue: deque() for queue in self.queues}
        self._generation = 0
        self._connected = False
        self._tried = False
        self._problem = "still connecting"
        self._cancelled = False
        self._paused = False
        self._unsent_acknowledgements: list[int] = []
        self._flush_scheduled = False
        # On the consumer thread: every delivery tag up to this one is
        # acknowledged, and so are these later ones (see `_send_acknowledgements`).
        self._acknowledged_through = 0
        self._acknowledged_ahead: set[int] = set()
        self._last_tag = 0  # the newest delivery tag dispatched here
        # How the consumer takes messages (see `hold_back`): "full" prefetch,
        # "held" (no consumer while a long job runs) or "one" at a time after
        # it, or "isolated" (no consumer: suspects are taken one by one, see
        # `isolate`); the deliveries whose jobs ran long; the prefetch to
        # consume with when the next acknowledgements go out.
        self._mode = "full"
        self._long: set[int] = set()
        self._switch_to: int | None = None
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

    def take(self, queues: Sequence[str]) -> _Received | None:
        """Pop the next buffered delivery, in the priority order of `queues`."""
        with self._state:
            for queue in queues:
                buffered = self._buffer.get(queue)
                if buffered:
                    return buffered.popleft()
        return None

    def take_redelivered(self) -> list[_Received]:
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

    def isolate(self) -> list[_Received]:
        """Take no more messages, and pop the buffered ones, so a suspect can run alone.

        The caller gives back what is returned; acknowledgements queued
        before this reach the broker before the suspect is taken (the
        consumer thread runs calls in order). Consuming resumes with `resume`.
        """
        with self._state:
            generation = self._generation
            self._mode, self._switch_to = "isolated", None
        self._call(self._cancel_consumers, generation)
        # Deliveries read while the cancel waited for the broker reach the
        # buffer once the consumer thread has dispatched them: one more call.
        self._call(lambda: None, generation)
        return self.take_all()

    def take_suspect(self) -> _Received | None:
        """Take one message of the suspects queues, in the priority order of the queues."""
        with self._state:
            generation = self._generation

        def get() -> _Received | None:
            for queue in self.queues:
                method, properties, body = self._channel.basic_get(
                    suspects_queue_name(queue), auto_ack=False
                )
                if method is not None:
                    self._note_tag(method.delivery_tag)
                    return _Received(
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
            self._mode = "full"
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
            if self._mode == "held" and tag in self._long:
                # The long job ended: take the next message, one at a time.
                self._mode, self._switch_to = "one", 1
            elif self._mode == "one" and tag not in self._long:
                # A job ended without running long: prefetch in full again.
                self._mode, self._switch_to = "full", self._prefetch
            self._long.discard(tag)
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
            switch, self._switch_to = self._switch_to, None
        if not (current and self._channel.is_open):
            return
        if switch is not None:
            # Before the acknowledgement: a consumer whose one message is
            # unacknowledged has none on its way to be handed back.
            self._cancel_consumers()
        self._send_acknowledgement_frames(tags)
        if switch is not None:
            self._start_consumers(switch, generation)

    def _send_acknowledgement_frames(self, tags: list[int]) -> None:
        """Acknowledge `tags`, as few frames as the settled runs of tags allow.

        The broker numbers a channel's deliveries 1, 2, 3, ...; once every
        delivery up to some tag is settled, one `multiple` acknowledgement of
        the newest of them covers the run. A settled delivery behind one still
        running or still buffered is acknowledged alone, at once, and counted
        so that later runs can step over it.
        """
        unsent = set(tags)
        through = self._acknowledged_through
        while through + 1 in unsent or through + 1 in self._acknowledged_ahead:
            through += 1
            self._acknowledged_ahead.discard(through)
        in_run = [tag for tag in unsent if tag <= through]
        if in_run:
            self._channel.basic_ack(max(in_run), multiple=True)
        self._acknowledged_through = through
        for tag in sorted(unsent - set(in_run)):
            self._channel.basic_ack(tag)
            self._acknowledged_ahead.add(tag)

    def pause(self) -> None:
        """Stop taking messages (the broker keeps the rest), for a worker that stops."""
        with self._state:
            self._paused = True
            generation = self._generation

        try:
            self._call(self._cancel_consumers, generation)
        except (_StaleDelivery, AmqpUnavailableError, amqp.AMQPError, OSError) as error:
            logger.debug("cancelling the amqp consumer: %s", error)

    def hold_back(self, delivery: Delivery) -> list[_Received]:
        """`delivery`'s job runs long: take no new messages, and pop the buffered ones.

        The consumer is cancelled while the job runs; once it ended, messages
        come one at a time until a job ends without running long, then with
        the full prefetch again. The caller gives back what is returned.
        """
        with self._state:
            generation = self._generation
            if not self._connected or delivery.generation != generation:
                return []
            self._long.add(delivery.delivery_tag)
            cancel = self._mode == "full"
            if cancel:
                self._mode = "held"
        if cancel:
            self._call(self._cancel_consumers, generation)
        # Deliveries read while that call waited for the broker reach the
        # buffer once the consumer thread has dispatched them: one more call.
        self._call(lambda: None, generation)
        return self.take_all()

    def put_back(self, received: Sequence[_Received]) -> None:
        """Return deliveries to the front of the buffer, in their order."""
        with self._state:
            for each in reversed(received):
                if each.generation == self._generation:
                    self._buffer[each.queue].appendleft(each)
            self._state.notify_all()

    def take_all(self) -> list[_Received]:
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
        except (_StaleDelivery, amqp.AMQPError, OSError) as error:
            raise AmqpUnavailableError(
                f"cannot count messages on RabbitMQ at {self._where}: {_describe(error)}"
            ) from error
        with self._state:
            return bool(ready) or any(self._buffer.get(queue) for queue in queues)

    def stop(self) -> None:
        """Stop the thread, which closes the connection (unacknowledged messages go back).

        Acknowledgements still queued for the consumer thread are sent first.
        """
        with self._state:
            generation = self._generation
        with contextlib.suppress(_StaleDelivery, AmqpUnavailableError, amqp.AMQPError, OSError):
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
                raise _StaleDelivery()
        call = _Call(function)
        try:
            connection.add_callback_threadsafe(call.run)
        except amqp.ConnectionWrongStateError as error:
            raise _StaleDelivery() from error
        deadline = time.monotonic() + CALL_TIMEOUT_SECONDS
        while not call.done.wait(0.1):
            with self._state:
                if generation != self._generation:
                    raise _StaleDelivery()
            if time.monotonic() > deadline:
                raise AmqpUnavailableError(
                    f"RabbitMQ at {self._where} did not answer in {CALL_TIMEOUT_SECONDS:g}s"
                )
        if call.error is not None:
            raise call.error
        return call.result

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
        connection = pika.BlockingConnection(
            _named(self._parameters, f"queueing worker {self.pid}")
        )
        self._connection = connection
        channel = connection.channel()
        self._acknowledged_through, self._acknowledged_ahead = 0, set()
        self._last_tag = 0
        channel.add_on_cancel_callback(self._on_cancel)
        with self._state:
            self._generation += 1
            generation = self._generation
            self._cancelled = False
            self._mode, self._long, self._switch_to = "full", set(), None
            # Suspects published before are in their queues: the check below sees them.
            self.suspects_due = False
        for queue in self.queues:
            channel.queue_declare(queue, durable=True)
        self._channel = channel
        if self._check_suspects(channel):
            # They run first, alone: consuming would only fetch messages to give back.
            with self._state:
                self._mode = "isolated"
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
        self._note_tag(tag)
        received = _Received(queue, tag, bool(method.redelivered), properties, body, generation)
        with self._state:
            if generation == self._generation:
                self._buffer[queue].append(received)
                self._state.notify_all()

    def _note_tag(self, tag: int) -> None:
        """Follow the channel's delivery tags as deliveries reach this side."""
        if tag > self._last_tag + 1:
            # Tags never dispatched here went back to the broker with pika
            # (see `_cancel_consumers`): acknowledgement runs step over them.
            self._acknowledged_ahead.update(range(self._last_tag + 1, tag))
        self._last_tag = max(self._last_tag, tag)

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
            self._problem = _describe(error)
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
_running: weakref.WeakSet[_Consumer] = weakref.WeakSet()


@atexit.register
def _stop_consumers() -> None:
    for consumer in list(_running):
        if consumer.pid == os.getpid():
            consumer.stop()


def _named(
    parameters: pika.ConnectionParameters | pika.URLParameters, name: str
) -> pika.ConnectionParameters | pika.URLParameters:
    """A copy of `parameters` whose connection shows as `name` in the broker's tools."""
    named = copy.copy(parameters)
    named.client_properties = {"connection_name": name}
    return named


def _vhost_path(parameters: pika.ConnectionParameters | pika.URLParameters) -> str:
    vhost = parameters.virtual_host
    return "/" if vhost == "/" else f"/{vhost}"


def _describe(error: BaseException) -> str:
    text = str(error).strip() or repr(error)
    return f"{type(error).__name__}: {text.splitlines()[0]}"


def _unsent(unsent: Callable[[], int] | None) -> str:
    if unsent is None:
        return ""
    count = unsent()
    return f"; {count} job(s) not confirmed" if count else ""


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode(errors="replace")
    return str(value)


def _integer(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def _number(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default
