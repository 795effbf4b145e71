"""What every reliability test stands on: one queue, real workers, a run log.

A `target` is a queue on a real server with `craft queue:work` processes to
serve it: the database driver on SQLite, PostgreSQL and MariaDB, and the
amqp driver on RabbitMQ (failed jobs then go to a SQLite file of the test).
Each test runs once per target. The test pushes from this process; workers
run in a copy of the project under `tmp_path`, with the test's key, and
every worker still running at the end is killed.

PostgreSQL and MariaDB are reached at the URLs of `tests/services.py`
(TEST_POSTGRESQL_URL, TEST_MARIADB_URL), in this process and in the
workers'. RabbitMQ queues get a random name and are deleted afterwards.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

from queueing import Queue, Signer
from queueing.drivers.amqp import AmqpDriver
from tests.database_fixtures import (
    ENGINES,
    Backend,
    WorkerProcess,
    backend_env,
    make_project,
    open_backend,
    project_env,
    start_worker,
    wait_until,
    workers,
)
from tests.services import require

TARGETS = [*ENGINES, "amqp"]
# Seconds a database job stays leased to a worker: short, so the jobs a
# killed worker held are due again soon.
RETRY_AFTER = 2.0
# Workers look for due jobs this often (seconds) when they find none.
SLEEP = "0.05"


@dataclass
class Target:
    """A queue on one engine or broker, and the way to run workers over it."""

    name: str
    project: Path
    environment: dict[str, str]
    queue: Queue
    # Seconds a job held by a worker that died stays out of reach (0 on amqp,
    # where the broker hands it out again as soon as the connection drops).
    retry_after: float
    # What makes every worker of this target die at start-up: arguments and
    # environment settings of a configuration that cannot work.
    misconfiguration: tuple[tuple[str, ...], dict[str, str]]
    # Jobs still queued; ask once no worker runs (on amqp a worker's jobs are not counted).
    pending: Callable[[], int]
    # Rows of `failed_jobs` where this target's workers store failed jobs.
    failures: Callable[[], list[Any]]
    # Whether some job is leased to a worker now (never on amqp, where the broker holds it).
    holds_leases: Callable[[], bool]
    started: list[WorkerProcess] = field(default_factory=list)

    def start_worker(self, *arguments: str, **settings: str) -> WorkerProcess:
        """Start `craft queue:work *arguments` (killed at the end of the test if still running)."""
        worker = start_worker(
            self.project, {**self.environment, **settings}, "--sleep", SLEEP, *arguments
        )
        self.started.append(worker)
        return worker

    def wait_out_leases(self) -> None:
        """Wait until no job is held by a worker, such as the jobs of one that died."""
        wait_until(
            lambda: not self.holds_leases(),
            self.retry_after + 10,
            "jobs stayed leased long after their lease should have ended",
            interval=0.1,
        )


def finish(worker: WorkerProcess, timeout: float) -> int:
    """Wait for `worker` to exit and return its status; kill it and fail after `timeout`."""
    try:
        return worker.wait(timeout=timeout)
    except subprocess.TimeoutExpired as error:
        worker.kill()
        raise AssertionError(
            f"the worker was still running after {timeout:g}s:\n{worker.output()}{worker.errors()}"
        ) from error


@pytest.fixture
def run_log(tmp_path: Path) -> Path:
    """The file every job of the test appends a line to, once per run."""
    return tmp_path / "runs.log"


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """A queue with nothing in it, on each engine and on RabbitMQ."""
    if request.param == "amqp":
        yield from _amqp_target(tmp_path)
    else:
        yield from _database_target(request.param, tmp_path)


def _database_target(engine: str, folder: Path) -> Iterator[Target]:
    with open_backend(engine, folder, retry_after=RETRY_AFTER) as backend, workers() as started:
        project = make_project(folder, retry_after=RETRY_AFTER)
        yield Target(
            name=engine,
            project=project,
            environment=backend_env(project, backend),
            queue=backend.queue,
            retry_after=RETRY_AFTER,
            misconfiguration=(("--channel", "no-such-connection"), {}),
            pending=lambda: len(backend.jobs()),
            holds_leases=lambda: _leased(backend),
            failures=backend.failures,
            started=started,
        )


def _leased(backend: Backend) -> bool:
    """Whether a job of `backend` is reserved by a worker whose lease has not ended."""
    now = time.time() * 1000
    return any((row.reserved_until or 0) > now for row in backend.jobs())


def _amqp_target(folder: Path) -> Iterator[Target]:
    require("rabbitmq")
    name = f"test-reliability-{uuid.uuid4().hex[:12]}"
    # The SQLite backend only provides the failed_jobs table and the key.
    with open_backend("sqlite", folder) as store:
        driver = AmqpDriver(queue=name)
        try:
            with workers() as started:
                project = make_project(folder)
                yield Target(
                    name="amqp",
                    project=project,
                    environment=project_env(
                        project,
                        store.key,
                        DB_SQLITE_URL=store.url,
                        DB_CONNECTION="sqlite",
                        QUEUE_FAILED_CONNECTION="sqlite",
                        QUEUE_DRIVER="amqp",
                        QUEUE_AMQP_CHANNEL=name,
                    ),
                    queue=Queue({"amqp": lambda: driver}, "amqp", Signer(store.key)),
                    retry_after=0.0,
                    misconfiguration=((), {"QUEUE_AMQP_PASSWORD": "not-the-password"}),
                    # Suspects wait in their own queue beside the job queue.
                    pending=lambda: _ready_messages(name) + _ready_messages(f"{name}.suspects"),
                    holds_leases=lambda: False,
                    failures=store.failures,
                    started=started,
                )
        finally:
            driver.close()
            _delete_queue(name)


def _ready_messages(name: str) -> int:
    """Messages waiting in the RabbitMQ queue `name` (0 if it does not exist)."""
    with contextlib.closing(_connect()) as connection:
        try:
            return connection.channel().queue_declare(name, passive=True).method.message_count
        except pika.exceptions.ChannelClosedByBroker as error:
            if error.reply_code == 404:
                return 0
            raise


def _delete_queue(name: str) -> None:
    """Delete the queue `name` and the queue beside it where the driver keeps suspects.

    (Jobs that were running when a worker died wait in `<name>.suspects`;
    holding queues for delays expire on their own.)
    """
    for queue in (name, f"{name}.suspects"):
        with (
            contextlib.suppress(pika.exceptions.AMQPError, OSError),
            contextlib.closing(_connect()) as connection,
        ):
            connection.channel().queue_delete(queue)


def _connect() -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
