"""A delivered message twice over: as the consumer thread read it, and as a worker holds it.

Both carry the connection generation they came on, because a delivery can
only be acknowledged on the connection that delivered it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pika

from queueing.payload import Envelope

if TYPE_CHECKING:
    from queueing.drivers.amqp.consumer import Consumer


@dataclass(frozen=True)
class Received:
    """A delivery as the consumer thread read it; `suspect`: taken from `queue`'s suspects queue."""

    queue: str
    delivery_tag: int
    redelivered: bool
    properties: pika.BasicProperties
    body: bytes
    generation: int
    suspect: bool = False


@dataclass(frozen=True)
class Delivery:
    """A message a worker holds: its envelope and the delivery to acknowledge.

    `suspect` says it was taken alone from its queue's suspects queue, and
    `unconfirmed_death` that its delivery before that may have been a death
    (see the package's notes on attempts).
    """

    envelope: Envelope
    delivery_tag: int
    generation: int
    consumer: Consumer = field(repr=False, compare=False)
    suspect: bool = False
    unconfirmed_death: bool = False
