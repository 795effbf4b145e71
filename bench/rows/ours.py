"""Our rows: the amqp and database drivers with a `craft queue:work` process, async and sync.

Pushes go through the public API exactly as an application makes them:
`bootstrap()` builds the container from `config/`, `container.make(Queue)`
pushes `NoopJob` (an uninstantiated `Queueable` class, built by the worker's
container) one job per `push` call. Workers are `craft queue:work`
processes. The environment points every connection at the benchmark's own
schema, database or file and sets a throw-away application key.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from bench import child, probe, servers
from bench.pushing import Pusher, gated, paced, timed
from bench.rows.base import Concurrency, InProcessRow, Run, WorkerRow, WorkerSpec

AMQP_QUEUE = "queue-bench-amqp"
DATABASE_QUEUE = "bench"
POSTGRES_SCHEMA = "queue_bench_ours"
MARIADB_DATABASE = "queue_bench_ours"
DRAIN_WAIT = 600.0  # seconds an in-process pool may take to finish what was pushed


def our_environment(run: Run) -> dict[str, str]:
    """Settings every process of our rows shares: the key and the benchmark's connections.

    The default connection (and so the failed-job store, unless a row names
    another) is a SQLite file in the scratch directory, so the project's own
    `storage/database.sqlite` is never touched; every server is the local one.
    """
    return {
        "APP_KEY": run.key,
        "APP_DEBUG": "false",
        "DB_CONNECTION": "sqlite",
        "DB_SQLITE_URL": f"sqlite:///{run.workdir / 'ours.sqlite'}",
        "DB_PGSQL_URL": sqlalchemy_postgres_url(),
        "DB_MYSQL_URL": f"mysql+pymysql://root@{servers.HOST}:3306/{MARIADB_DATABASE}",
        "QUEUE_FAILED_CONNECTION": "sqlite",
        # The amqp driver's settings, pinned to the local broker whatever the shell says.
        "QUEUE_AMQP_URL": servers.AMQP_URL,
        "QUEUE_AMQP_HOST": servers.HOST,
        "QUEUE_AMQP_PORT": "5672",
        "QUEUE_AMQP_USERNAME": "guest",
        "QUEUE_AMQP_PASSWORD": "guest",
    }


def sqlalchemy_postgres_url() -> str:
    """The benchmark's PostgreSQL URL for SQLAlchemy (psycopg 3), in its own schema."""
    return servers.postgres_dsn(POSTGRES_SCHEMA).replace("postgresql://", "postgresql+psycopg://")


def craft_worker(driver: str, channel: str, queue: str | None, stop_when_empty: bool) -> WorkerSpec:
    """`craft queue:work` for one queue, quiet, with the default sleep and concurrency."""
    argv = [sys.executable, "-m", "craft", "queue:work", "--driver", driver, "--channel", channel]
    if queue:
        argv += ["--queue", queue]
    argv.append("--quiet")
    if stop_when_empty:
        argv.append("--stop-when-empty")
    return WorkerSpec(argv, concurrency="1", exits_when_empty=stop_when_empty)


# Pushing (in a child process) -------------------------------------------------------


@contextlib.contextmanager
def queue_pusher(driver: str, channel: str | None, queue: str | None) -> Iterator[Pusher]:
    """`Queue.push(NoopJob, args=(seq,))` on `driver`, one job per call."""
    from bench.jobs import NoopJob
    from providers import bootstrap
    from queueing import Queue

    target = bootstrap(child.ROOT).make(Queue).driver(driver)
    try:
        yield lambda seq: target.push(NoopJob, args=(seq,), channel=channel, queue=queue)
    finally:
        target.close()


@contextlib.contextmanager
def bulk_queue_pusher(
    driver: str, channel: str | None, queue: str | None
) -> Iterator[Callable[[list[int]], Any]]:
    """`Queue.push(*jobs)` on `driver`: one `NumberedNoopJob` instance per number, one call."""
    from bench.jobs import NumberedNoopJob
    from providers import bootstrap
    from queueing import Queue

    target = bootstrap(child.ROOT).make(Queue).driver(driver)
    try:
        yield lambda seqs: target.push(
            *[NumberedNoopJob(seq) for seq in seqs], channel=channel, queue=queue
        )
    finally:
        target.close()


def check_driver(driver: str) -> dict[str, Any]:
    """Say whether `driver` can be built from `config/` (run in a child)."""
    import importlib

    from providers import bootstrap
    from queueing import Queue

    try:
        importlib.import_module(f"queueing.drivers.{driver}")
    except Exception as error:
        return {"problem": f"queueing.drivers.{driver} does not import: {error}"}
    try:
        queue = bootstrap(child.ROOT).make(Queue)
        if driver not in queue.names:
            return {"problem": f"config/queue.py DRIVERS has no {driver!r} driver"}
        queue.connection(driver)
    except Exception as error:
        return {"problem": f"{type(error).__name__}: {error}"}
    return {"problem": None}


# Rows -------------------------------------------------------------------------------


class AmqpRow(WorkerRow):
    """Our amqp driver on RabbitMQ."""

    name = "amqp"
    kind = "ours"
    broker = "rabbitmq"
    floor = "raw-pika"
    servers = ("rabbitmq",)
    pusher = "bench.rows.ours:queue_pusher"
    bulk_pusher = "bench.rows.ours:bulk_queue_pusher"
    summary = (
        "Queue.push(NoopJob) on the amqp driver; one `craft queue:work --driver amqp` "
        f"process on queue {AMQP_QUEUE}."
    )

    def check(self, run: Run) -> str | None:
        try:
            outcome = child.call(
                "bench.rows.ours:check_driver",
                {"driver": "amqp"},
                env=run.environment(**our_environment(run)),
                timeout=60,
            )
        except child.ChildError as error:
            return f"not available: {error}"
        return f"not available: {outcome['problem']}" if outcome["problem"] else None

    def pusher_options(self, run: Run) -> dict[str, Any]:
        return {"driver": "amqp", "channel": AMQP_QUEUE, "queue": None}

    def env(self, run: Run) -> dict[str, str]:
        return our_environment(run)

    def worker(
        self, run: Run, concurrency: Concurrency, stop_when_empty: bool
    ) -> WorkerSpec | None:
        if concurrency == "default":
            return None
        return craft_worker("amqp", AMQP_QUEUE, None, stop_when_empty)

    def purge(self, run: Run) -> int:
        return servers.purge_queue(AMQP_QUEUE)

    def setup(self, run: Run) -> None:
        servers.delete_queues(AMQP_QUEUE, f"{AMQP_QUEUE}.suspects")

    def cleanup(self, run: Run) -> None:
        # The worker declares the queue of redelivered messages beside it.
        servers.delete_queues(AMQP_QUEUE, f"{AMQP_QUEUE}.suspects")


class DatabaseRow(WorkerRow):
    """Our database driver on one engine, in the benchmark's own schema, database or file."""

    kind = "ours"
    pusher = "bench.rows.ours:queue_pusher"
    bulk_pusher = "bench.rows.ours:bulk_queue_pusher"

    def __init__(self, connection: str, broker: str, floor: str | None) -> None:
        self.connection = connection
        self.name = f"database-{broker}"
        self.broker = broker
        self.floor = floor
        self.servers = (broker,) if broker != "sqlite" else ()
        self.summary = (
            f"Queue.push(NoopJob) on the database driver, connection {connection!r}; one "
            f"`craft queue:work --driver database --channel {connection}` process."
        )
        self._engine: Any = None

    def url(self, run: Run) -> str:
        """The SQLAlchemy URL of this row's connection."""
        names = {"pgsql": "DB_PGSQL_URL", "mysql": "DB_MYSQL_URL", "sqlite": "DB_SQLITE_URL"}
        return our_environment(run)[names[self.connection]]

    def env(self, run: Run) -> dict[str, str]:
        return {
            **our_environment(run),
            "QUEUE_DATABASE_CONNECTION": self.connection,
            "QUEUE_FAILED_CONNECTION": self.connection,
        }

    def pusher_options(self, run: Run) -> dict[str, Any]:
        return {"driver": "database", "channel": self.connection, "queue": DATABASE_QUEUE}

    def worker(
        self, run: Run, concurrency: Concurrency, stop_when_empty: bool
    ) -> WorkerSpec | None:
        if concurrency == "default":
            return None
        return craft_worker("database", self.connection, DATABASE_QUEUE, stop_when_empty)

    def setup(self, run: Run) -> None:
        import sqlalchemy

        from queueing.schema import metadata

        self._drop(run)
        if self.broker == "postgresql":
            servers.recreate_schema(POSTGRES_SCHEMA)
        elif self.broker == "mariadb":
            servers.mariadb_execute(f"CREATE DATABASE `{MARIADB_DATABASE}`")
        self._engine = sqlalchemy.create_engine(self.url(run))
        metadata.create_all(self._engine)

    def purge(self, run: Run) -> int:
        from queueing.schema import queue_jobs

        with self._engine.begin() as connection:
            return int(connection.execute(queue_jobs.delete()).rowcount or 0)

    def cleanup(self, run: Run) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        self._drop(run)

    def _drop(self, run: Run) -> None:
        if self.broker == "postgresql":
            servers.drop_schema(POSTGRES_SCHEMA)
        elif self.broker == "mariadb":
            servers.mariadb_execute(f"DROP DATABASE IF EXISTS `{MARIADB_DATABASE}`")
        else:
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(f"{run.workdir / 'ours.sqlite'}{suffix}")


class AsyncRow(InProcessRow):
    """Our async driver in threading mode: a pool of threads in the pushing process."""

    name = "async"
    kind = "ours"
    floor = "raw-threadpool"
    target = "bench.rows.ours:async_step"
    default_concurrency = "workers (config)"
    summary = (
        "Queue.push(NoopJob) on the async driver (mode threading); c=1 is workers=1, "
        "the default is config/queue.py's workers. The pool is held still while pushing, "
        "then drains the full schedule."
    )

    def env(self, run: Run, step: str) -> dict[str, str]:
        settings = {**our_environment(run), "QUEUE_ASYNC_MODE": "threading"}
        if step == "c1":
            settings["QUEUE_ASYNC_WORKERS"] = "1"
        return settings


class SyncRow(InProcessRow):
    """Our sync driver: each job runs inside `push`."""

    name = "sync"
    kind = "ours"
    target = "bench.rows.ours:sync_step"
    drains = False
    default_concurrency = "-"
    summary = "Queue.push(NoopJob) on the sync driver: the job runs before push returns."

    def env(self, run: Run, step: str) -> dict[str, str]:
        return our_environment(run)


# In-process steps (in a child process) ----------------------------------------------


def async_step(step: str, count: int, rate: float) -> dict[str, Any]:
    """One step of the async row; see `InProcessRow`."""
    from bench.jobs import NoopJob
    from providers import bootstrap
    from queueing import Queue

    queue = bootstrap(child.ROOT).make(Queue).driver("async")
    driver: Any = queue.connection()

    def push(seq: int) -> None:
        queue.push(NoopJob, args=(seq,))

    try:
        # Measured first, while no pool thread competes for the interpreter.
        seal = seal_seconds(queue, count) / count if step == "c1" else None
        if step == "latency":
            push(probe.WARM_UP)
            outcome = paced(push, count, rate)
        else:
            elapsed = gated(lambda: queue.push(probe.hold), push, driver.workers, count)
            outcome = {"elapsed": elapsed, "concurrency": f"{driver.workers} threads"}
        if seal is not None:
            outcome["seal"] = seal
        if not driver.drain(DRAIN_WAIT):
            raise TimeoutError(f"the async pool did not finish within {DRAIN_WAIT:.0f}s")
        return outcome
    finally:
        probe.gate.set()
        driver.close()


def seal_seconds(queue: Any, count: int) -> float:
    """Seconds `count` jobs take to serialize and sign (`Queue.prepare`), nothing queued."""
    from bench.jobs import NoopJob

    def seal(seq: int) -> None:
        queue.prepare(
            (NoopJob,),
            args=(seq,),
            kwargs=None,
            wait=None,
            channel=None,
            queue=None,
            callback="handle",
        )

    return timed(seal, count)


def sync_step(step: str, count: int, rate: float) -> dict[str, Any]:
    """One step of the sync row; see `InProcessRow` (there is nothing to drain)."""
    from bench.jobs import NoopJob
    from providers import bootstrap
    from queueing import Queue

    queue = bootstrap(child.ROOT).make(Queue).driver("sync")

    def push(seq: int) -> None:
        queue.push(NoopJob, args=(seq,))

    push(probe.WARM_UP)
    if step == "latency":
        return paced(push, count, rate)
    return {"elapsed": timed(push, count)}
