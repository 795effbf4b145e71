"""Our rows: `craft queue:work --async-concurrency 100` on amqp and on PostgreSQL.

Jobs are `bench.io.jobs.SleepJob` instances pushed through the public API
(`bootstrap()`, `container.make(Queue)`), 100 per `push(*jobs)` call; the
environment is `bench.rows.ours.our_environment` (a throw-away key, every
connection pointed at the benchmark's own queue, schema or file).
"""

from __future__ import annotations

import sys
from typing import Any

from bench import child, servers
from bench.io.base import IoRun, WorkerIoRow
from bench.io.postgres import drop_schema, postgres_count, postgres_dsn, recreate_schema
from bench.io.work import IN_FLIGHT
from bench.rows.base import WorkerSpec
from bench.rows.ours import our_environment

AMQP_QUEUE = "queue-bench-io-amqp"
DATABASE_QUEUE = "bench-io"
OURS_SCHEMA = "queue_bench_io_ours"
PUSH_BATCH = 100  # jobs per `push(*jobs)` call when filling our queues (not timed)


def craft_worker(driver: str, channel: str, queue: str | None) -> WorkerSpec:
    """`craft queue:work --stop-when-empty --async-concurrency 100` on one queue, quiet."""
    argv = [sys.executable, "-m", "craft", "queue:work", "--driver", driver, "--channel", channel]
    if queue:
        argv += ["--queue", queue]
    argv += ["--stop-when-empty", "--async-concurrency", str(IN_FLIGHT), "--quiet"]
    return WorkerSpec(argv, concurrency=str(IN_FLIGHT), exits_when_empty=True)


def push_ours(driver: str, channel: str, queue: str | None, count: int) -> dict[str, Any]:
    """Push `SleepJob(0..count-1)` on `driver`, `PUSH_BATCH` per call (run in a child)."""
    from bench.io.jobs import SleepJob
    from providers import bootstrap
    from queueing import Queue

    target = bootstrap(child.ROOT).make(Queue).driver(driver)
    try:
        for first in range(0, count, PUSH_BATCH):
            jobs = [SleepJob(seq) for seq in range(first, min(count, first + PUSH_BATCH))]
            target.push(*jobs, channel=channel, queue=queue)
    finally:
        target.close()
    return {}


def push_ours_amqp(count: int) -> dict[str, Any]:
    """Fill our amqp queue (run in a child)."""
    return push_ours("amqp", AMQP_QUEUE, None, count)


def push_ours_database(count: int) -> dict[str, Any]:
    """Fill our database queue on the `pgsql` connection (run in a child)."""
    return push_ours("database", "pgsql", DATABASE_QUEUE, count)


class OursAmqpRow(WorkerIoRow):
    """Our amqp driver on RabbitMQ."""

    name = "ours-amqp"
    kind = "ours"
    broker = "rabbitmq"
    servers = ("rabbitmq",)
    pusher = "bench.io.ours:push_ours_amqp"
    summary = (
        f"SleepJob instances pushed on the amqp driver; one `craft queue:work --driver amqp "
        f"--stop-when-empty --async-concurrency {IN_FLIGHT}` process, QUEUE_AMQP_PREFETCH="
        "the run's --prefetch; durable queue, persistent messages, each acked after its job ended."
    )

    def env(self, run: IoRun) -> dict[str, str]:
        return {**our_environment(run), "QUEUE_AMQP_PREFETCH": str(run.prefetch)}

    def worker(self, run: IoRun) -> WorkerSpec:
        return craft_worker("amqp", AMQP_QUEUE, None)

    # The driver declares the queue and its `.suspects` queue (payloads failing the check).
    queues = (AMQP_QUEUE, f"{AMQP_QUEUE}.suspects")

    def left(self, run: IoRun) -> int:
        return servers.purge_queue(AMQP_QUEUE)

    def setup(self, run: IoRun) -> None:
        servers.delete_queues(*self.queues)

    def cleanup(self, run: IoRun) -> None:
        servers.delete_queues(*self.queues)


class OursPostgresRow(WorkerIoRow):
    """Our database driver on PostgreSQL, in its own schema of the chosen database."""

    name = "ours-postgresql"
    kind = "ours"
    broker = "postgresql"
    servers = ("postgresql",)
    pusher = "bench.io.ours:push_ours_database"
    summary = (
        "SleepJob instances pushed on the database driver (connection pgsql); one `craft "
        f"queue:work --driver database --stop-when-empty --async-concurrency {IN_FLIGHT}` "
        "process, QUEUE_DATABASE_PREFETCH=the run's --prefetch; the worker's connection "
        "commits with synchronous_commit off (its built-in setting), pushes with it on."
    )

    def url(self, run: IoRun) -> str:
        """The SQLAlchemy URL of the benchmark's schema."""
        dsn = postgres_dsn(run.database, OURS_SCHEMA)
        return dsn.replace("postgresql://", "postgresql+psycopg://")

    def env(self, run: IoRun) -> dict[str, str]:
        return {
            **our_environment(run),
            "DB_PGSQL_URL": self.url(run),
            "QUEUE_DATABASE_CONNECTION": "pgsql",
            "QUEUE_FAILED_CONNECTION": "pgsql",
            "QUEUE_DATABASE_PREFETCH": str(run.prefetch),
        }

    def worker(self, run: IoRun) -> WorkerSpec:
        return craft_worker("database", "pgsql", DATABASE_QUEUE)

    def setup(self, run: IoRun) -> None:
        import sqlalchemy

        from queueing.schema import metadata

        recreate_schema(run.database, OURS_SCHEMA)
        engine = sqlalchemy.create_engine(self.url(run))
        try:
            metadata.create_all(engine)
        finally:
            engine.dispose()

    def left(self, run: IoRun) -> int:
        return postgres_count(run.database, OURS_SCHEMA, "SELECT count(*) FROM queue_jobs")

    def cleanup(self, run: IoRun) -> None:
        drop_schema(run.database, OURS_SCHEMA)
