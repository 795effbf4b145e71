"""The peers at 100 in flight, each set up the way its documentation does it.

The worker-side code is in `bench.io.dramatiq_app`, `bench.io.procrastinate_app`
and `bench.io.arq_app`.
"""

from __future__ import annotations

import os
import sys
import uuid
from typing import Any

from bench import child, servers
from bench.io.base import IoRun, WorkerIoRow
from bench.io.postgres import drop_schema, postgres_count, postgres_dsn, recreate_schema
from bench.io.work import IN_FLIGHT
from bench.rows.base import WorkerSpec

PROCRASTINATE_SCHEMA = "queue_bench_io_procrastinate"
PROCRASTINATE_QUEUE = "queue-bench-io"
DRAMATIQ_QUEUE = "queue-bench-io-dramatiq"
ARQ_QUEUE = "queue-bench-io-arq"
ARQ_JOB_PREFIX = "queue-bench-io-"


def push_procrastinate(count: int) -> dict[str, Any]:
    """`defer(seq=...)` by task name through procrastinate's sync connector (run in a child)."""
    from procrastinate import App, SyncPsycopgConnector

    from bench.io.procrastinate_app import TASK

    app = App(connector=SyncPsycopgConnector(conninfo=os.environ["BENCH_PROCRASTINATE_DSN"]))
    with app.open():
        deferrer = app.configure_task(TASK, queue=PROCRASTINATE_QUEUE)
        for seq in range(count):
            deferrer.defer(seq=seq)
    return {}


class ProcrastinateRow(WorkerIoRow):
    """procrastinate on PostgreSQL, `procrastinate worker --concurrency 100`."""

    name = "procrastinate"
    kind = "peer"
    broker = "postgresql"
    servers = ("postgresql",)
    packages = ("procrastinate",)
    pusher = "bench.io.peers:push_procrastinate"
    summary = (
        f"async task deferred by name (sync connector); `procrastinate worker --concurrency "
        f"{IN_FLIGHT} --one-shot --log-level warning`; the worker's connection commits with "
        "synchronous_commit off, like ours; LISTEN/NOTIFY on, finished jobs kept (defaults)."
    )

    def env(self, run: IoRun) -> dict[str, str]:
        # The pusher's connection (and the schema set-up): commits as the server says.
        return {
            "BENCH_QUEUE": PROCRASTINATE_QUEUE,
            "BENCH_PROCRASTINATE_DSN": postgres_dsn(run.database, PROCRASTINATE_SCHEMA),
        }

    def worker(self, run: IoRun) -> WorkerSpec:
        argv = [sys.executable, "-m", "procrastinate", "--log-level", "warning"]
        argv += ["--app", "bench.io.procrastinate_app.app", "worker"]
        argv += ["--queues", PROCRASTINATE_QUEUE, "--concurrency", str(IN_FLIGHT), "--one-shot"]
        dsn = postgres_dsn(run.database, PROCRASTINATE_SCHEMA, "synchronous_commit=off")
        return WorkerSpec(
            argv,
            concurrency=str(IN_FLIGHT),
            env={"BENCH_PROCRASTINATE_DSN": dsn},
            exits_when_empty=True,
        )

    def setup(self, run: IoRun) -> None:
        recreate_schema(run.database, PROCRASTINATE_SCHEMA)
        child.call(
            "bench.rows.peers:procrastinate_apply_schema",
            {},
            env=run.environment(**self.env(run)),
            timeout=120,
        )

    def left(self, run: IoRun) -> int:
        return postgres_count(
            run.database,
            PROCRASTINATE_SCHEMA,
            "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')",
        )

    def cleanup(self, run: IoRun) -> None:
        drop_schema(run.database, PROCRASTINATE_SCHEMA)


def push_dramatiq(count: int) -> dict[str, Any]:
    """`sleep.send(seq)` (run in a child)."""
    from bench.io.dramatiq_app import broker, sleep

    try:
        for seq in range(count):
            sleep.send(seq)
    finally:
        broker.close()
    return {}


class DramatiqRow(WorkerIoRow):
    """Dramatiq on RabbitMQ: an async actor, the AsyncIO middleware, 100 worker threads."""

    name = "dramatiq"
    kind = "peer"
    broker = "rabbitmq"
    servers = ("rabbitmq",)
    packages = ("dramatiq", "pika")
    pusher = "bench.io.peers:push_dramatiq"
    queues = (DRAMATIQ_QUEUE, f"{DRAMATIQ_QUEUE}.DQ", f"{DRAMATIQ_QUEUE}.XQ")
    summary = (
        "async actor with the AsyncIO middleware (one event loop thread per process); "
        f"`dramatiq --processes 1 --threads {IN_FLIGHT}` (each thread awaits one job on the "
        f"loop), prefetch the run's --prefetch (its env dramatiq_queue_prefetch; Dramatiq's "
        "default is twice the threads); messages "
        "acked after the actor ran; stopped once every job ended."
    )

    def env(self, run: IoRun) -> dict[str, str]:
        return {"BENCH_QUEUE": DRAMATIQ_QUEUE, "dramatiq_queue_prefetch": str(run.prefetch)}

    def worker(self, run: IoRun) -> WorkerSpec:
        argv = [sys.executable, "-m", "dramatiq", "bench.io.dramatiq_app"]
        argv += ["--queues", DRAMATIQ_QUEUE, "--processes", "1", "--threads", str(IN_FLIGHT)]
        return WorkerSpec(argv, concurrency=str(IN_FLIGHT))

    def left(self, run: IoRun) -> int:
        return sum(servers.purge_queue(queue) for queue in self.queues)

    def setup(self, run: IoRun) -> None:
        servers.delete_queues(*self.queues)

    def cleanup(self, run: IoRun) -> None:
        servers.delete_queues(*self.queues)


def push_arq(count: int) -> dict[str, Any]:
    """`enqueue_job("sleep", seq)` on an arq pool, ids under `ARQ_JOB_PREFIX` (run in a child)."""
    import asyncio

    from arq import create_pool
    from arq.connections import RedisSettings

    token = uuid.uuid4().hex[:8]

    async def enqueue() -> None:
        pool = await create_pool(RedisSettings(host=servers.HOST, port=6379))
        try:
            for seq in range(count):
                job = await pool.enqueue_job(
                    "sleep", seq, _queue_name=ARQ_QUEUE, _job_id=f"{ARQ_JOB_PREFIX}{token}-{seq}"
                )
                if job is None:
                    raise RuntimeError(f"arq refused job {seq}: its id is taken")
        finally:
            await pool.aclose()

    asyncio.run(enqueue())
    return {}


class ArqRow(WorkerIoRow):
    """arq on Redis, `max_jobs = 100`."""

    name = "arq"
    kind = "peer"
    broker = "redis"
    servers = ("redis",)
    packages = ("arq",)
    pusher = "bench.io.peers:push_arq"
    summary = (
        f"`enqueue_job()`; `arq bench.io.arq_app.WorkerSettings --burst` with max_jobs = "
        f"{IN_FLIGHT}, arq's defaults otherwise (results kept, Redis as configured)."
    )

    def env(self, run: IoRun) -> dict[str, str]:
        return {"BENCH_QUEUE": ARQ_QUEUE}

    def worker(self, run: IoRun) -> WorkerSpec:
        argv = [sys.executable, "-m", "arq", "bench.io.arq_app.WorkerSettings", "--burst"]
        return WorkerSpec(argv, concurrency=str(IN_FLIGHT), exits_when_empty=True)

    def left(self, run: IoRun) -> int:
        from redis import Redis

        with Redis.from_url(servers.REDIS_URL) as connection:
            return int(connection.zcard(ARQ_QUEUE))

    def setup(self, run: IoRun) -> None:
        self.cleanup(run)

    def cleanup(self, run: IoRun) -> None:
        from redis import Redis

        with Redis.from_url(servers.REDIS_URL) as connection:
            keys = [ARQ_QUEUE, f"{ARQ_QUEUE}:health-check"]
            keys += list(connection.scan_iter(match=f"arq:*{ARQ_JOB_PREFIX}*", count=1000))
            for start in range(0, len(keys), 1000):
                connection.delete(*keys[start : start + 1000])
