"""What the amqp driver raises, and how it sorts pika's exceptions.

The publisher, the consumer and the driver all report the broker the same
way, so the errors and the groups of pika exceptions live here once.
"""

from __future__ import annotations

import pika.exceptions as amqp

from queueing.drivers.base import DriverUnavailableError

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


def describe(error: BaseException) -> str:
    """Name `error` and its first line, for one-line reports."""
    text = str(error).strip() or repr(error)
    return f"{type(error).__name__}: {text.splitlines()[0]}"
