"""Publishing with confirms: one connection per pushing thread, batches, resends.

`push()` returns only once the broker confirmed every message. A batch goes
out back to back with up to `CONFIRM_WINDOW` messages awaiting their confirm;
a lost connection is reopened and what was not confirmed is sent again (the
package's notes on pushing say what that guarantees).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pika
import pika.exceptions as amqp

from queueing.drivers.amqp.errors import (
    CONNECTION_ERRORS,
    REFUSED_LOGIN,
    AmqpUnavailableError,
    PublishRefusedError,
    describe,
)
from queueing.drivers.amqp.settings import Parameters, named

logger = logging.getLogger("queueing.amqp")

T = TypeVar("T")

# A publisher idle this long reads what the broker sent before its next publish.
IDLE_CHECK_SECONDS = 1.0
# How many messages of one push may await their confirm at once.
CONFIRM_WINDOW = 256


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message ready to publish: where to, the body, the properties."""

    routing_key: str
    body: bytes
    properties: pika.BasicProperties


class Publishers:
    """The publishers of one driver, one per thread, and the loop that retries their work.

    pika's connections are not thread-safe, so each pushing thread opens its
    own on first use and keeps it for the pushes after.
    """

    def __init__(self, parameters: Parameters, where: str, attempts: int) -> None:
        self.parameters = parameters
        self.where = where
        self.attempts = attempts
        self._local = threading.local()
        self._all: list[Publisher] = []
        self._lock = threading.Lock()

    def current(self) -> Publisher:
        """This thread's publisher, opened anew when it cannot be used any more."""
        publisher: Publisher | None = getattr(self._local, "publisher", None)
        if publisher is not None and publisher.usable():
            return publisher
        if publisher is not None:
            self.drop_current()
        publisher = Publisher(self.parameters)
        self._local.publisher = publisher
        with self._lock:
            self._all.append(publisher)
        return publisher

    def drop_current(self) -> None:
        """Close this thread's publisher; the next use opens another."""
        publisher: Publisher | None = self._local.__dict__.pop("publisher", None)
        if publisher is None:
            return
        with self._lock:
            if publisher in self._all:
                self._all.remove(publisher)
        publisher.close()

    def run(
        self,
        what: str,
        action: Callable[[Publisher], T],
        unsent: Callable[[], int] | None = None,
    ) -> T:
        """Run `action` on this thread's publisher, reconnecting on a lost connection.

        `action` must be safe to run again after a failure (push keeps track
        of what is confirmed); it is tried `attempts` times in all. Errors
        become `AmqpUnavailableError` or `PublishRefusedError` with the
        broker's address and reason; `unsent` counts the jobs left unconfirmed.
        """
        failures = 0
        while True:
            publisher: Publisher | None = None
            try:
                publisher = self.current()
                return action(publisher)
            except (amqp.UnroutableError, amqp.NackError) as error:
                # Unroutable: the queue vanished after it was declared here;
                # declaring it again is worth a try, as is a nacked publish.
                failures += 1
                if publisher is not None:
                    publisher.forget_declarations()
                if failures >= self.attempts:
                    raise PublishRefusedError(
                        f"RabbitMQ at {self.where} did not take the message "
                        f"({describe(error)}) after {failures} attempt(s)" + _unsent(unsent)
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
                self.drop_current()
                raise AmqpUnavailableError(
                    f"RabbitMQ at {self.where} refused the login: {describe(error)} "
                    "(check the amqp username, password and vhost)" + _unsent(unsent)
                ) from error
            except CONNECTION_ERRORS as error:
                self.drop_current()
                failures += 1
                if failures >= self.attempts:
                    raise AmqpUnavailableError(
                        f"cannot reach RabbitMQ at {self.where} ({what}) after {failures} "
                        f"attempt(s): {describe(error)}" + _unsent(unsent)
                    ) from error
                logger.warning(
                    "lost the connection to RabbitMQ at %s (%s); trying again",
                    self.where,
                    describe(error),
                )
            time.sleep(min(2.0, 0.25 * 2**failures))

    def close(self) -> None:
        """Close the publishers that can be closed here.

        A connection of a thread that still runs belongs to that thread, and
        closes when it ends.
        """
        current = threading.current_thread()
        with self._lock:
            closable = [
                publisher
                for publisher in self._all
                if publisher.thread is current or not publisher.thread.is_alive()
            ]
            self._all = [p for p in self._all if p not in closable]
        for publisher in closable:
            publisher.close()
        self._local.__dict__.pop("publisher", None)


class Publisher:
    """One thread's publishing connection, its confirm-mode channels and its declared queues.

    `channel` is pika's blocking channel in confirm mode: each publish on it
    waits for its own confirm. A push of several messages uses a second
    channel, `_batch`, on which confirm mode is turned on underneath pika's
    blocking layer (its `_impl` channel), so that messages go out back to back
    and their confirms are counted here as they arrive (`_on_confirm`).
    """

    def __init__(self, parameters: Parameters) -> None:
        self.pid = os.getpid()
        self.thread = threading.current_thread()
        self.connection = pika.BlockingConnection(
            named(parameters, f"queueing publisher {self.pid}")
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
        self._confirmed: Callable[[Any], Any] = ignore
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

    def publish(self, outgoing: dict[Any, Outgoing], confirmed: Callable[[Any], Any]) -> None:
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
        self, outgoing: dict[Any, Outgoing], confirmed: Callable[[Any], Any]
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
            self._confirmed = ignore
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
        self.connection.call_later(0, ignore)

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


def ignore(*_: Any) -> None:
    """A callback that does nothing."""


def _unsent(unsent: Callable[[], int] | None) -> str:
    if unsent is None:
        return ""
    count = unsent()
    return f"; {count} job(s) not confirmed" if count else ""
