"""Raw floor worker: a pika consumer that runs each message's no-op job, then acks it.

`python -m bench.apps.raw_pika` consumes `$BENCH_QUEUE` with a prefetch of
`$BENCH_PREFETCH` and one ack per message, after the job. It stops by
itself after `$BENCH_MAX_SECONDS`.
"""

from __future__ import annotations

import os

import pika

from bench.probe import record
from bench.servers import AMQP_URL


def main() -> None:
    """Consume until stopped."""
    queue = os.environ["BENCH_QUEUE"]
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.queue_declare(queue, durable=True)
    channel.basic_qos(prefetch_count=int(os.environ.get("BENCH_PREFETCH", "100")))

    def on_message(channel: object, method: object, _properties: object, body: bytes) -> None:
        record(int(body))
        channel.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]

    channel.basic_consume(queue, on_message)
    lifetime = float(os.environ.get("BENCH_MAX_SECONDS", "3600"))
    connection.call_later(lifetime, channel.stop_consuming)
    channel.start_consuming()
    connection.close()


if __name__ == "__main__":
    main()
