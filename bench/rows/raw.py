"""The raw floors: what the broker or database gives with no queue library in between.

- `raw-pika`: confirmed publishes one by one (a persistent message, then
  wait for the broker's confirm), and a pika consumer that acks each
  message after its job (prefetch `PIKA_PREFETCH`).
- `raw-postgresql`: one INSERT per push (autocommit); a worker loop of one job
  per transaction, `SELECT ... FOR UPDATE SKIP LOCKED` then `DELETE`.
- `raw-sqlite`: the same on a SQLite file (WAL, `BEGIN IMMEDIATE`).
- `raw-threadpool`: `ThreadPoolExecutor.submit(record, seq)`.

Bodies are the sequence number as text: no serialization, no signing.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import probe, servers
from bench.pushing import Pusher, gated, paced
from bench.rows.base import Concurrency, InProcessRow, Run, WorkerRow, WorkerSpec

PIKA_QUEUE = "queue-bench-raw"
PIKA_PREFETCH = 100
POSTGRES_SCHEMA = "queue_bench_raw"
RAW_QUEUE = "bench"
TABLE_SQL = (
    "CREATE TABLE raw_jobs (id {id} PRIMARY KEY, queue VARCHAR(191) NOT NULL, "
    "payload {payload} NOT NULL, available_at BIGINT NOT NULL)"
)
INDEX_SQL = "CREATE INDEX raw_jobs_queue_available_at ON raw_jobs (queue, available_at, id)"
INSERT_SQL = "INSERT INTO raw_jobs (queue, payload, available_at) VALUES ({p}, {p}, {p})"


# Pushing (in a child process) -------------------------------------------------------


@contextlib.contextmanager
def pika_pusher(queue: str) -> Iterator[Pusher]:
    """A persistent publish per push, each waiting for the broker's confirm."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(servers.AMQP_URL))
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True)
        channel.confirm_delivery()
        persistent = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)

        def push(seq: int) -> None:
            channel.basic_publish("", queue, str(seq).encode(), persistent)

        yield push
    finally:
        connection.close()


@contextlib.contextmanager
def postgres_pusher(dsn: str) -> Iterator[Pusher]:
    """One INSERT per push, each its own transaction."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as connection:
        insert = INSERT_SQL.format(p="%s")

        def push(seq: int) -> None:
            connection.execute(insert, (RAW_QUEUE, str(seq).encode(), _now_ms()))

        yield push


@contextlib.contextmanager
def sqlite_pusher(path: str) -> Iterator[Pusher]:
    """One INSERT per push, each its own transaction."""
    from bench.apps.raw_sql import sqlite_connection

    connection = sqlite_connection(path)
    insert = INSERT_SQL.format(p="?")
    try:

        def push(seq: int) -> None:
            connection.execute(insert, (RAW_QUEUE, str(seq).encode(), _now_ms()))

        yield push
    finally:
        connection.close()


def _now_ms() -> int:
    return int(time.time() * 1000)


# Rows -------------------------------------------------------------------------------


class PikaRow(WorkerRow):
    """Confirmed publish one by one; consume and ack one by one."""

    name = "raw-pika"
    kind = "raw"
    broker = "rabbitmq"
    servers = ("rabbitmq",)
    packages = ("pika",)
    pusher = "bench.rows.raw:pika_pusher"
    summary = (
        "pika: persistent publish waiting for each confirm; one consumer process "
        f"(prefetch {PIKA_PREFETCH}) running the job, then acking each message."
    )

    def pusher_options(self, run: Run) -> dict[str, Any]:
        return {"queue": PIKA_QUEUE}

    def env(self, run: Run) -> dict[str, str]:
        return {"BENCH_QUEUE": PIKA_QUEUE, "BENCH_PREFETCH": str(PIKA_PREFETCH)}

    def worker(
        self, run: Run, concurrency: Concurrency, stop_when_empty: bool
    ) -> WorkerSpec | None:
        if concurrency == "default":
            return None
        return WorkerSpec([sys.executable, "-m", "bench.apps.raw_pika"], concurrency="1")

    def purge(self, run: Run) -> int:
        return servers.purge_queue(PIKA_QUEUE)

    def setup(self, run: Run) -> None:
        servers.delete_queues(PIKA_QUEUE)

    def cleanup(self, run: Run) -> None:
        servers.delete_queues(PIKA_QUEUE)


class SqlRow(WorkerRow):
    """A plain one-job-per-transaction SQL loop on PostgreSQL or SQLite."""

    kind = "raw"
    latency = False  # the loop only polls; its latency would be its poll interval

    def __init__(self, broker: str) -> None:
        self.broker = broker
        self.name = f"raw-{broker}"
        self.servers = ("postgresql",) if broker == "postgresql" else ()
        self.packages = ("psycopg",) if broker == "postgresql" else ()
        self.pusher = f"bench.rows.raw:{'postgres' if broker == 'postgresql' else 'sqlite'}_pusher"
        how = "FOR UPDATE SKIP LOCKED" if broker == "postgresql" else "BEGIN IMMEDIATE"
        self.summary = (
            "one INSERT per push; one worker process looping over one job per transaction "
            f"({how}, run the job, DELETE, COMMIT)."
        )

    def _sqlite_path(self, run: Run) -> str:
        return str(run.workdir / "raw.sqlite")

    def pusher_options(self, run: Run) -> dict[str, Any]:
        if self.broker == "postgresql":
            return {"dsn": servers.postgres_dsn(POSTGRES_SCHEMA)}
        return {"path": self._sqlite_path(run)}

    def env(self, run: Run) -> dict[str, str]:
        return {
            "BENCH_QUEUE": RAW_QUEUE,
            "BENCH_DSN": servers.postgres_dsn(POSTGRES_SCHEMA),
            "BENCH_SQLITE_PATH": self._sqlite_path(run),
        }

    def worker(
        self, run: Run, concurrency: Concurrency, stop_when_empty: bool
    ) -> WorkerSpec | None:
        if concurrency == "default":
            return None
        argv = [sys.executable, "-m", "bench.apps.raw_sql", self.broker]
        if stop_when_empty:
            argv.append("--stop-when-empty")
        return WorkerSpec(argv, concurrency="1", exits_when_empty=stop_when_empty)

    def setup(self, run: Run) -> None:
        if self.broker == "postgresql":
            servers.recreate_schema(POSTGRES_SCHEMA)
            servers.postgres_execute(
                TABLE_SQL.format(id="BIGSERIAL", payload="BYTEA"),
                INDEX_SQL,
                schema=POSTGRES_SCHEMA,
            )
            return
        from bench.apps.raw_sql import sqlite_connection

        self._remove_sqlite(run)
        connection = sqlite_connection(self._sqlite_path(run))
        connection.execute(TABLE_SQL.format(id="INTEGER", payload="BLOB"))
        connection.execute(INDEX_SQL)
        connection.close()

    def purge(self, run: Run) -> int:
        if self.broker == "postgresql":
            import psycopg

            with psycopg.connect(servers.postgres_dsn(POSTGRES_SCHEMA), autocommit=True) as db:
                return db.execute("DELETE FROM raw_jobs").rowcount
        from bench.apps.raw_sql import sqlite_connection

        connection = sqlite_connection(self._sqlite_path(run))
        try:
            return connection.execute("DELETE FROM raw_jobs").rowcount
        finally:
            connection.close()

    def cleanup(self, run: Run) -> None:
        if self.broker == "postgresql":
            servers.drop_schema(POSTGRES_SCHEMA)
        else:
            self._remove_sqlite(run)

    def _remove_sqlite(self, run: Run) -> None:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._sqlite_path(run) + suffix)


class ThreadPoolRow(InProcessRow):
    """`ThreadPoolExecutor.submit`: the floor of any in-process pool."""

    name = "raw-threadpool"
    kind = "raw"
    target = "bench.rows.raw:threadpool_step"
    default_concurrency = f"{min(32, (os.cpu_count() or 1) + 4)} threads"
    summary = (
        "ThreadPoolExecutor.submit(record, seq); c=1 is max_workers=1, the default is "
        "Python's min(32, cores + 4). Held still while submitting, then drained."
    )


def threadpool_step(step: str, count: int, rate: float) -> dict[str, Any]:
    """One step of the thread-pool row; see `InProcessRow`."""
    workers = 1 if step == "c1" else min(32, (os.cpu_count() or 1) + 4)
    executor = ThreadPoolExecutor(max_workers=workers)

    def push(seq: int) -> None:
        executor.submit(probe.record, seq)

    try:
        if step == "latency":
            push(probe.WARM_UP)
            return paced(push, count, rate)
        elapsed = gated(lambda: executor.submit(probe.hold), push, workers, count)
        return {"elapsed": elapsed, "concurrency": f"{workers} threads"}
    finally:
        probe.gate.set()
        executor.shutdown(wait=True)
