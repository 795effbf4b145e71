"""arq on Redis: the worker settings `arq bench.io.arq_app.WorkerSettings --burst` loads.

`max_jobs` is the jobs in flight; arq's defaults otherwise (results kept,
0.5 s poll delay when the queue looks empty).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from arq.connections import RedisSettings

from bench.io.work import IN_FLIGHT, sleep_job
from bench.servers import HOST

QUEUE = os.environ.get("BENCH_QUEUE", "queue-bench-io-arq")


async def sleep(context: dict[str, Any], seq: int) -> None:
    """The shared body (arq passes its context first)."""
    await sleep_job(seq)


class WorkerSettings:
    """What `arq` reads: the function, the Redis server, the queue and the concurrency."""

    functions: ClassVar[list[Any]] = [sleep]
    redis_settings = RedisSettings(host=HOST, port=6379)
    queue_name = QUEUE
    max_jobs = IN_FLIGHT
