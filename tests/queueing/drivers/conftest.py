"""Fixtures of the database driver tests: a backend per engine, on a clock the test moves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from queueing.clock import ManualClock
from tests.database_fixtures import ENGINES, START, Backend, open_backend


@pytest.fixture
def clock() -> ManualClock:
    """The time the driver and the queue read; it moves only when the test says so."""
    return ManualClock(START)


@pytest.fixture(params=ENGINES)
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> Iterator[Backend]:
    """A database driver on SQLite, PostgreSQL or MariaDB with empty tables, leased 60 s."""
    with open_backend(request.param, tmp_path, clock=clock, retry_after=60) as backend:
        yield backend


@pytest.fixture
def markers_dir(tmp_path: Path) -> Path:
    """Where the jobs of a test leave their marker files."""
    path = tmp_path / "markers"
    path.mkdir()
    return path
