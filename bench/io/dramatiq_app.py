"""Dramatiq on RabbitMQ with an async actor, as its docs set one up.

The `AsyncIO` middleware starts one event loop thread per worker process;
each worker thread hands its message's coroutine to that loop and waits for
it, so the jobs in flight are the worker's `--threads` (100 here). The
consumer's prefetch is Dramatiq's default for that, twice the threads.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware.asyncio import AsyncIO

from bench.io.work import sleep_job
from bench.servers import AMQP_URL

QUEUE = os.environ.get("BENCH_QUEUE", "queue-bench-io-dramatiq")

broker = RabbitmqBroker(url=AMQP_URL)
broker.add_middleware(AsyncIO())
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE)
async def sleep(seq: int) -> None:
    """The shared body."""
    await sleep_job(seq)
