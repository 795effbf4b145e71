"""Celery on RabbitMQ: the app and the no-op task its worker loads.

Celery's defaults otherwise: JSON messages, no result backend, no publisher
confirms, the message acked when the task starts.
"""

from __future__ import annotations

import os

from celery import Celery

from bench.probe import record
from bench.servers import HOST

QUEUE = os.environ.get("BENCH_QUEUE", "queue-bench-celery")

app = Celery("bench", broker=f"amqp://guest:guest@{HOST}:5672//")
app.conf.task_default_queue = QUEUE
app.conf.broker_connection_retry_on_startup = True


@app.task(name="bench.noop")
def noop(seq: int) -> None:
    """Record the start."""
    record(seq)
