"""The peers, each as its documentation sets it up, with its own defaults.

c=1 is each system's one-process, one-consumer set-up (Celery's solo pool,
Dramatiq's 1 process x 1 thread, RQ's SimpleWorker; Huey, procrastinate and
pgqueuer run that way by default); the default concurrency is what its
worker command does with no options. The worker-side code is in `bench.apps`.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from bench import child, servers
from bench.pushing import Pusher
from bench.rows.base import Concurrency, Run, WorkerRow, WorkerSpec

CORES = os.cpu_count() or 1
CELERY_QUEUE = "queue-bench-celery"
DRAMATIQ_QUEUE = "queue-bench-dramatiq"
RQ_QUEUE = "queue-bench-rq"
PROCRASTINATE_SCHEMA = "queue_bench_procrastinate"
PROCRASTINATE_QUEUE = "queue-bench"
PGQUEUER_SCHEMA = "queue_bench_pgqueuer"


def _python(*arguments: str) -> list[str]:
    return [sys.executable, *arguments]


# Celery -----------------------------------------------------------------------------


@contextlib.contextmanager
def celery_pusher() -> Iterator[Pusher]:
    """`noop.delay(seq)`."""
    from bench.apps.celery_app import app, noop

    try:
        yield noop.delay
    finally:
        app.close()


class CeleryRow(WorkerRow):
    """Celery on RabbitMQ."""

    name = "celery"
    kind = "peer"
    broker = "rabbitmq"
    servers = ("rabbitmq",)
    packages = ("celery",)
    pusher = "bench.rows.peers:celery_pusher"
    default_concurrency = f"{CORES} (prefork)"
    summary = "task.delay(); c=1 is `celery worker -P solo`, the default the prefork pool."

    def env(self, run: Run) -> dict[str, str]:
        return {"BENCH_QUEUE": CELERY_QUEUE}

    def worker(self, run: Run, concurrency: Concurrency, stop_when_empty: bool) -> WorkerSpec:
        argv = _python("-m", "celery", "-A", "bench.apps.celery_app", "worker", "-Q", CELERY_QUEUE)
        argv += ["--loglevel", "WARNING"]
        if concurrency == "c1":
            return WorkerSpec([*argv, "-P", "solo"], concurrency="1")
        return WorkerSpec(argv, concurrency=self.default_concurrency)

    def purge(self, run: Run) -> int:
        return servers.purge_queue(CELERY_QUEUE)

    def setup(self, run: Run) -> None:
        servers.delete_queues(CELERY_QUEUE)

    def cleanup(self, run: Run) -> None:
        servers.delete_queues(CELERY_QUEUE)


# Dramatiq ---------------------------------------------------------------------------


@contextlib.contextmanager
def dramatiq_pusher() -> Iterator[Pusher]:
    """`noop.send(seq)`."""
    from bench.apps.dramatiq_app import broker, noop

    try:
        yield noop.send
    finally:
        broker.close()


class DramatiqRow(WorkerRow):
    """Dramatiq on RabbitMQ."""

    name = "dramatiq"
    kind = "peer"
    broker = "rabbitmq"
    servers = ("rabbitmq",)
    packages = ("dramatiq", "pika")
    pusher = "bench.rows.peers:dramatiq_pusher"
    default_concurrency = f"{CORES} proc x 8 thr"
    summary = "actor.send(); c=1 is `dramatiq --processes 1 --threads 1`."
    queues = (DRAMATIQ_QUEUE, f"{DRAMATIQ_QUEUE}.DQ", f"{DRAMATIQ_QUEUE}.XQ")

    def env(self, run: Run) -> dict[str, str]:
        return {"BENCH_QUEUE": DRAMATIQ_QUEUE}

    def worker(self, run: Run, concurrency: Concurrency, stop_when_empty: bool) -> WorkerSpec:
        argv = _python("-m", "dramatiq", "bench.apps.dramatiq_app", "--queues", DRAMATIQ_QUEUE)
        if concurrency == "c1":
            return WorkerSpec([*argv, "--processes", "1", "--threads", "1"], concurrency="1")
        return WorkerSpec(argv, concurrency=self.default_concurrency)

    def purge(self, run: Run) -> int:
        return sum(servers.purge_queue(queue) for queue in self.queues)

    def setup(self, run: Run) -> None:
        servers.delete_queues(*self.queues)

    def cleanup(self, run: Run) -> None:
        servers.delete_queues(*self.queues)


# RQ ---------------------------------------------------------------------------------


@contextlib.contextmanager
def rq_pusher() -> Iterator[Pusher]:
    """`queue.enqueue("bench.probe.record", seq)`."""
    from redis import Redis
    from rq import Queue

    connection = Redis.from_url(servers.REDIS_URL)
    queue = Queue(RQ_QUEUE, connection=connection)
    try:
        yield lambda seq: queue.enqueue("bench.probe.record", seq)
    finally:
        connection.close()


class RqRow(WorkerRow):
    """RQ on Redis."""

    name = "rq"
    kind = "peer"
    broker = "redis"
    servers = ("redis",)
    packages = ("rq", "redis")
    pusher = "bench.rows.peers:rq_pusher"
    default_concurrency = "1 (a fork per job)"
    summary = (
        "queue.enqueue(); c=1 is `rq worker -w rq.worker.SimpleWorker` (no fork), the "
        "default `rq worker` forks a work horse per job."
    )

    def worker(self, run: Run, concurrency: Concurrency, stop_when_empty: bool) -> WorkerSpec:
        argv = _python("-m", "rq.cli", "worker", "--url", servers.REDIS_URL, "--quiet")
        if concurrency == "c1":
            argv += ["--worker-class", "rq.worker.SimpleWorker"]
        label = "1" if concurrency == "c1" else self.default_concurrency
        return WorkerSpec([*argv, RQ_QUEUE], concurrency=label)

    def purge(self, run: Run) -> int:
        from redis import Redis
        from rq import Queue

        with Redis.from_url(servers.REDIS_URL) as connection:
            queue = Queue(RQ_QUEUE, connection=connection)
            left = queue.count
            registries = [
                queue.finished_job_registry,
                queue.failed_job_registry,
                queue.started_job_registry,
                queue.deferred_job_registry,
                queue.scheduled_job_registry,
                queue.canceled_job_registry,
            ]
            job_ids = queue.get_job_ids()
            for registry in registries:
                job_ids += registry.get_job_ids()
            keys = [
                key for job_id in job_ids for key in (f"rq:job:{job_id}", f"rq:results:{job_id}")
            ]
            keys += [registry.key for registry in registries] + [queue.key]
            for start in range(0, len(keys), 1000):
                connection.delete(*keys[start : start + 1000])
            return left

    def cleanup(self, run: Run) -> None:
        from redis import Redis
        from rq import Queue

        self.purge(run)
        with Redis.from_url(servers.REDIS_URL) as connection:
            # The registry of known queues; dead workers' keys expire by themselves.
            connection.srem("rq:queues", Queue(RQ_QUEUE, connection=connection).key)


# Huey -------------------------------------------------------------------------------


@contextlib.contextmanager
def huey_pusher() -> Iterator[Pusher]:
    """Calling the task, which enqueues it."""
    from bench.apps.huey_app import noop

    yield noop


class HueyRow(WorkerRow):
    """Huey with SqliteHuey."""

    name = "huey"
    kind = "peer"
    broker = "sqlite"
    packages = ("huey",)
    pusher = "bench.rows.peers:huey_pusher"
    summary = "task(seq) enqueues; `huey_consumer` with its defaults (1 worker thread)."

    def _path(self, run: Run) -> str:
        return str(run.workdir / "huey.sqlite")

    def env(self, run: Run) -> dict[str, str]:
        return {"BENCH_HUEY_PATH": self._path(run)}

    def worker(
        self, run: Run, concurrency: Concurrency, stop_when_empty: bool
    ) -> WorkerSpec | None:
        if concurrency == "default":
            return None
        argv = _python("-m", "huey.bin.huey_consumer", "bench.apps.huey_app.huey", "--quiet")
        return WorkerSpec(argv, concurrency="1")

    def purge(self, run: Run) -> int:
        if not os.path.exists(self._path(run)):
            return 0
        connection = sqlite3.connect(self._path(run), timeout=30)
        try:
            with connection:
                left = connection.execute("SELECT count(*) FROM task").fetchone()[0]
                connection.execute("DELETE FROM task")
                connection.execute("DELETE FROM kv")
            return int(left)
        except sqlite3.OperationalError:
            return 0  # no table yet
        finally:
            connection.close()

    def setup(self, run: Run) -> None:
        self.cleanup(run)

    def cleanup(self, run: Run) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._path(run) + suffix)


# procrastinate ----------------------------------------------------------------------


@contextlib.contextmanager
def procrastinate_pusher() -> Iterator[Pusher]:
    """`defer(seq=seq)` of the task by name, through procrastinate's synchronous connector.

    A pushing process that does not import the worker's tasks defers by name,
    as procrastinate documents for producers.
    """
    app = _procrastinate_sync_app()
    with app.open():
        deferrer = app.configure_task("bench.noop", queue=PROCRASTINATE_QUEUE)
        yield lambda seq: deferrer.defer(seq=seq)


def procrastinate_apply_schema() -> dict[str, Any]:
    """Create procrastinate's tables in the benchmark schema (run in a child)."""
    app = _procrastinate_sync_app()
    with app.open():
        app.schema_manager.apply_schema()
    return {}


def _procrastinate_sync_app() -> Any:
    from procrastinate import App, SyncPsycopgConnector

    return App(connector=SyncPsycopgConnector(conninfo=os.environ["BENCH_PROCRASTINATE_DSN"]))


class ProcrastinateRow(WorkerRow):
    """procrastinate on PostgreSQL."""

    name = "procrastinate"
    kind = "peer"
    broker = "postgresql"
    servers = ("postgresql",)
    packages = ("procrastinate",)
    pusher = "bench.rows.peers:procrastinate_pusher"
    summary = "task.defer() (sync connector); `procrastinate worker` with its defaults (c=1)."

    def env(self, run: Run) -> dict[str, str]:
        return {
            "BENCH_QUEUE": PROCRASTINATE_QUEUE,
            "BENCH_PROCRASTINATE_DSN": servers.postgres_dsn(PROCRASTINATE_SCHEMA),
        }

    def worker(
        self, run: Run, concurrency: Concurrency, stop_when_empty: bool
    ) -> WorkerSpec | None:
        if concurrency == "default":
            return None
        argv = _python("-m", "procrastinate", "--app", "bench.apps.procrastinate_app.app", "worker")
        return WorkerSpec([*argv, "--queues", PROCRASTINATE_QUEUE], concurrency="1")

    def setup(self, run: Run) -> None:
        servers.recreate_schema(PROCRASTINATE_SCHEMA)
        child.call(
            "bench.rows.peers:procrastinate_apply_schema",
            {},
            env=run.environment(**self.env(run)),
            timeout=120,
        )

    def purge(self, run: Run) -> int:
        import psycopg

        with psycopg.connect(servers.postgres_dsn(PROCRASTINATE_SCHEMA), autocommit=True) as db:
            row = db.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'todo'"
            ).fetchone()
            db.execute("TRUNCATE procrastinate_jobs CASCADE")
            return int(row[0]) if row else 0

    def cleanup(self, run: Run) -> None:
        servers.drop_schema(PROCRASTINATE_SCHEMA)


# pgqueuer ---------------------------------------------------------------------------


@contextlib.contextmanager
def pgqueuer_pusher() -> Iterator[Pusher]:
    """`SyncQueries.enqueue("bench_noop", payload)` on an autocommit psycopg connection."""
    import psycopg
    from pgqueuer.db import SyncPsycopgDriver
    from pgqueuer.queries import SyncQueries

    from bench.apps.pgqueuer_app import ENTRYPOINT

    with psycopg.connect(os.environ["BENCH_DSN"], autocommit=True) as connection:
        queries = SyncQueries(SyncPsycopgDriver(connection))
        yield lambda seq: queries.enqueue(ENTRYPOINT, str(seq).encode())


class PgqueuerRow(WorkerRow):
    """pgqueuer on PostgreSQL."""

    name = "pgqueuer"
    kind = "peer"
    broker = "postgresql"
    servers = ("postgresql",)
    packages = ("pgqueuer",)
    pusher = "bench.rows.peers:pgqueuer_pusher"
    summary = (
        "SyncQueries.enqueue(); one worker process running PgQueuer.run() as `pgq run` does "
        "(one dequeue loop taking batches of 10, LISTEN/NOTIFY; a batch's jobs run as asyncio "
        "tasks). That is both c=1 and the default."
    )

    def env(self, run: Run) -> dict[str, str]:
        return {"BENCH_DSN": servers.postgres_dsn(), "PGQUEUER_SCHEMA": PGQUEUER_SCHEMA}

    def worker(
        self, run: Run, concurrency: Concurrency, stop_when_empty: bool
    ) -> WorkerSpec | None:
        if concurrency == "default":
            return None
        return WorkerSpec(_python("-m", "bench.apps.pgqueuer_app"), concurrency="1")

    def setup(self, run: Run) -> None:
        servers.drop_schema(PGQUEUER_SCHEMA)
        completed = subprocess.run(
            _python("-m", "pgqueuer", "--pg-dsn", servers.postgres_dsn(), "install"),
            cwd=child.ROOT,
            env=run.environment(**self.env(run)),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"pgq install: {child.last_line(completed.stderr)}")

    def purge(self, run: Run) -> int:
        import psycopg

        with psycopg.connect(servers.postgres_dsn(PGQUEUER_SCHEMA), autocommit=True) as db:
            # Finished jobs leave the table when the worker flushes its log buffer; a
            # worker stopped just before that leaves them "picked", which is no job left.
            row = db.execute("SELECT count(*) FROM pgqueuer WHERE status = 'queued'").fetchone()
            db.execute("TRUNCATE pgqueuer, pgqueuer_log")
            return int(row[0]) if row else 0

    def cleanup(self, run: Run) -> None:
        servers.drop_schema(PGQUEUER_SCHEMA)
