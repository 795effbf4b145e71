"""Dramatiq on RabbitMQ: the broker and the no-op actor its worker loads.

Dramatiq's defaults otherwise: its default middleware, no publisher confirms,
the message acked after the actor ran.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from bench.probe import record
from bench.servers import AMQP_URL

QUEUE = os.environ.get("BENCH_QUEUE", "queue-bench-dramatiq")

broker = RabbitmqBroker(url=AMQP_URL)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE)
def noop(seq: int) -> None:
    """Record the start."""
    record(seq)
