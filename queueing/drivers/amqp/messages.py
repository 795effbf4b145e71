"""How an envelope travels as an AMQP message, and how it is read back.

The layout is the contract between pushers, workers and operators looking
at a queue, so writing it and reading it sit side by side.
"""

from __future__ import annotations

import uuid
from typing import Any

import pika

from queueing.payload import Envelope, signature_of

# The `driver` of every envelope read back (`AmqpDriver.name`).
DRIVER_NAME = "amqp"
# The longest AMQP short string (the `type` property).
SHORT_STRING_BYTES = 255
# Set on a suspect whose delivery before it may or may not have been a death.
UNCONFIRMED_DEATH_HEADER = "job-unconfirmed-death"


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
        driver=DRIVER_NAME,
        created=_text(headers.get("job-created")),
        available_at=_number(headers.get("job-available-at-ms"), now * 1000) / 1000,
        body=bytes(body or b""),
        attempts=attempts,
    )


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
