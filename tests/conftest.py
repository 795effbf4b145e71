"""Fixtures shared by the whole suite.

Two kinds of set-up live here:

* the application as a user runs it (`app`): the real `bootstrap()` of this
  repository, with a fresh key, an outbox file and a SQLite database of its
  own under the test's `tmp_path`;
* the queue's parts wired by hand (`container`, `signer`, `manual_clock`,
  `failed_store`, `runner`, `envelope_for`), for tests of one piece at a time.

Nothing here belongs to one driver; driver tests keep their own fixtures.
"""

from __future__ import annotations

import base64
import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from container import Container
from providers import bootstrap
from queueing import FailedJob, JobRunner, Queue, Signer
from queueing.clock import ManualClock
from queueing.connections import Connections
from queueing.payload import Envelope, seal

REPO_ROOT = Path(__file__).resolve().parent.parent


def fresh_key() -> str:
    """Return an application key in the form `craft key` prints."""
    return "base64:" + base64.b64encode(secrets.token_bytes(32)).decode()


class RecordingFailedJobStore:
    """A `FailedJobStore` that keeps failures in a list, for assertions."""

    def __init__(self) -> None:
        self.failures: list[FailedJob] = []

    def store(self, failure: FailedJob) -> None:
        """Keep `failure`."""
        self.failures.append(failure)

    @property
    def reasons(self) -> list[str]:
        """The reason of every stored failure, in order."""
        return [failure.reason for failure in self.failures]


# The application, bootstrapped ------------------------------------------------------


@pytest.fixture
def repo_root() -> Path:
    """The root of this project (where `config/application.py` lives)."""
    return REPO_ROOT


@pytest.fixture
def app_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh application key in `APP_KEY`."""
    key = fresh_key()
    monkeypatch.setenv("APP_KEY", key)
    return key


@pytest.fixture
def outbox_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The file the app's `Outbox` writes to (`OUTBOX_PATH`), inside `tmp_path`."""
    path = tmp_path / "outbox.jsonl"
    monkeypatch.setenv("OUTBOX_PATH", str(path))
    return path


@pytest.fixture
def app_database_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The app's default SQLite database (`DB_SQLITE_URL`), inside `tmp_path`.

    Keeps tests away from the developer's `storage/database.sqlite`.
    """
    path = tmp_path / "database.sqlite"
    monkeypatch.setenv("DB_SQLITE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("DB_CONNECTION", "sqlite")
    return path


@pytest.fixture
def app_environment(
    app_key: str, outbox_path: Path, app_database_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """The environment the app is bootstrapped with; child processes inherit it."""
    for name in ("QUEUE_DRIVER", "APP_DEBUG", "QUEUE_FAILED_CONNECTION"):
        monkeypatch.delenv(name, raising=False)
    return {"key": app_key, "outbox_path": outbox_path, "database_path": app_database_path}


@pytest.fixture
def app(app_environment: dict[str, Any], repo_root: Path) -> Iterator[Container]:
    """The container `providers.bootstrap()` builds for this repository."""
    container = bootstrap(repo_root)
    yield container
    container.make(Queue).close()
    if container.has(Connections):
        container.make(Connections).close()


@pytest.fixture
def unset_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Remove a variable from the environment for this test, and bring it back after.

    Setting it first makes monkeypatch remember the original state (set or
    not), so a value that a `.env` file loads during the test is removed again.
    """

    def unset(name: str) -> None:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)

    return unset


@pytest.fixture
def restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Undo the `sys.path` entries `bootstrap()` adds for a temporary project."""
    monkeypatch.setattr(sys, "path", list(sys.path))


# The queue's parts, wired by hand -----------------------------------------------------


@pytest.fixture
def container() -> Container:
    """An empty container."""
    return Container()


@pytest.fixture
def signer() -> Signer:
    """A signer with a fresh key."""
    return Signer(fresh_key())


@pytest.fixture
def manual_clock() -> ManualClock:
    """A clock that moves only when told, so waits and retry delays cost no time."""
    return ManualClock()


@pytest.fixture
def failed_store() -> RecordingFailedJobStore:
    """A failed-job store that records what it is given."""
    return RecordingFailedJobStore()


@pytest.fixture
def runner(
    container: Container,
    signer: Signer,
    failed_store: RecordingFailedJobStore,
    manual_clock: ManualClock,
) -> JobRunner:
    """The execution path over `container`, `signer`, `failed_store` and `manual_clock`."""
    return JobRunner(container, signer, failed_store, manual_clock)


@pytest.fixture
def envelope_for(signer: Signer, manual_clock: ManualClock) -> Callable[..., Envelope]:
    """Seal one job into an envelope, as `Queue.push` does, signed by `signer`."""

    def make(
        obj: Any,
        *,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        callback: str = "handle",
        queue: str = "default",
        driver: str = "test",
        delay: float = 0.0,
    ) -> Envelope:
        return seal(
            signer,
            obj,
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            callback=callback,
            queue=queue,
            driver=driver,
            now=manual_clock.now(),
            delay=delay,
        )

    return make
