"""Every driver agrees on how long a job may wait: up to 49 days, refused past it at push."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from queueing import JobRunner, Queue, Queueable, Signer
from queueing.drivers import AsyncDriver, SyncDriver
from queueing.drivers.database import DatabaseDriver
from queueing.testing import QueueFake
from tests.database_fixtures import open_backend


class Noop(Queueable):
    """Does nothing; only its wait matters here."""

    def handle(self) -> None:
        """Nothing."""


def _sync(runner: JobRunner, _tmp: Path) -> Any:
    return SyncDriver(runner)


def _async(runner: JobRunner, _tmp: Path) -> Any:
    return AsyncDriver(runner, exit_grace=0)


DRIVERS: dict[str, Callable[[JobRunner, Path], Any]] = {"sync": _sync, "async": _async}


@pytest.mark.parametrize("name", sorted(DRIVERS))
def test_an_in_process_driver_refuses_a_wait_past_49_days_at_push(
    name: str, runner: JobRunner, signer: Signer, tmp_path: Path
) -> None:
    driver = DRIVERS[name](runner, tmp_path)
    queue = Queue({name: lambda: driver}, name, signer)
    try:
        with pytest.raises(ValueError, match="longest wait a job may have is 49 days"):
            queue.push(Noop, wait=10**12)
        assert getattr(driver, "pending", lambda: 0)() == 0
    finally:
        driver.close()


def test_the_database_driver_refuses_a_wait_past_49_days_and_queues_nothing(
    tmp_path: Path,
) -> None:
    with open_backend("sqlite", tmp_path) as backend:
        assert isinstance(backend.driver, DatabaseDriver)
        with pytest.raises(ValueError, match="49 days"):
            backend.queue.push(Noop, wait="50 days")
        assert backend.jobs() == []
        backend.queue.push(Noop, wait="49 days")
        assert len(backend.jobs()) == 1


def test_the_fake_refuses_the_same_waits(runner: JobRunner, signer: Signer) -> None:
    fake = QueueFake(runner.container)

    with pytest.raises(ValueError, match="49 days"):
        fake.push(Noop, wait=10**12)
