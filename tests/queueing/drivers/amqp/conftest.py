"""Fixtures of the amqp driver tests: the broker, drivers on fresh queues, runners, workers.

`markers_dir` comes from the conftest one folder up.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from container import Container
from queueing import JobRunner, Queue, Signer
from queueing.connections import Connections
from queueing.drivers.amqp import (
    AmqpDriver,
)
from queueing.failed import DatabaseFailedJobStore
from queueing.schema import metadata
from tests.queueing.drivers.amqp.support import (
    ROOT,
    Broker,
    RecordingStore,
    WorkerProcess,
    queue_on,
)
from tests.services import require


@pytest.fixture
def broker() -> Iterator[Broker]:
    """RabbitMQ, seen through a plain connection; the test's queues are deleted after."""
    require("rabbitmq")
    broker = Broker()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def key() -> str:
    """A fresh application key."""
    return "base64:" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def queue_name(broker: Broker) -> str:
    """The test's queue."""
    return broker.name()


@pytest.fixture
def drivers() -> Iterator[Callable[..., AmqpDriver]]:
    """Make amqp drivers; each is closed after the test."""
    made: list[AmqpDriver] = []

    def make(**settings: Any) -> AmqpDriver:
        settings.setdefault("prefetch", 1)  # one at a time unless a test says otherwise
        driver = AmqpDriver(**settings)
        made.append(driver)
        return driver

    yield make
    for driver in made:
        driver.close()


@pytest.fixture
def driver(drivers: Callable[..., AmqpDriver], queue_name: str) -> AmqpDriver:
    """An amqp driver whose default queue is the test's queue."""
    return drivers(queue=queue_name)


@pytest.fixture
def store() -> RecordingStore:
    """Where the runner stores failed and refused jobs."""
    return RecordingStore()


@pytest.fixture
def queue(driver: AmqpDriver, key: str) -> Queue:
    """A `Queue` pushing to `driver`."""
    return queue_on(driver, key)


@pytest.fixture
def runner(key: str, store: RecordingStore) -> JobRunner:
    """The execution path, with the same key as `queue`."""
    return JobRunner(Container(), Signer(key), store)


@pytest.fixture
def sqlite_failed_store(tmp_path: Path) -> Iterator[DatabaseFailedJobStore]:
    """A real `failed_jobs` table in a SQLite file of the test (`failed.sqlite`)."""
    connections = Connections({"sqlite": f"sqlite:///{tmp_path / 'failed.sqlite'}"}, "sqlite")
    metadata.create_all(connections.engine("sqlite"))
    try:
        yield DatabaseFailedJobStore(connections, "sqlite")
    finally:
        connections.close()


@pytest.fixture
def storing_runner(key: str, sqlite_failed_store: DatabaseFailedJobStore) -> JobRunner:
    """The execution path, with the same key as `queue`, storing failures in `failed_jobs`."""
    return JobRunner(Container(), Signer(key), sqlite_failed_store)


@pytest.fixture
def start_worker(tmp_path: Path, key: str) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers from the repository root; each still running is killed after."""
    started: list[WorkerProcess] = []
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("APP_", "DB_", "QUEUE_"))
    }
    environment.update(
        APP_KEY=key,
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        # Failed jobs go to a SQLite file of the test, never the project's.
        DB_SQLITE_URL=f"sqlite:///{tmp_path / 'worker.sqlite'}",
    )

    def start(*arguments: str, **settings: str) -> WorkerProcess:
        worker = WorkerProcess(tmp_path, {**environment, **settings}, *arguments)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()
