"""Shared set-up for the database driver, worker and `craft` tests.

Two ways in:

* in-process: `open_backend()` builds a `DatabaseDriver`, a failed-job store,
  a `Queue` and a `JobRunner` on one engine (SQLite file, PostgreSQL or
  MariaDB) without bootstrapping a project, so no `.env` or `sys.path` change
  leaks into the test process;
* real processes: `make_project()` copies the repository's `config/`, `app/`
  and migrations into a temporary folder, `project_env()` gives the
  environment a `craft` process there needs, and `craft()` / `start_worker()`
  run the console script.

PostgreSQL and MariaDB are shared with other test modules, so every backend
starts from empty `queue_jobs` and `failed_jobs` tables (created if missing).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select, text
from sqlalchemy.engine import Engine

from container import Container
from queueing import JobRunner, Queue, Signer
from queueing.clock import Clock, SystemClock
from queueing.connections import Connections
from queueing.drivers.database import DatabaseDriver
from queueing.failed import DatabaseFailedJobStore
from queueing.schema import failed_jobs, metadata, queue_jobs
from tests.services import URLS, require

ROOT = Path(__file__).resolve().parents[1]
CRAFT = Path(sys.executable).with_name("craft")

ENGINES = ["sqlite", "postgresql", "mariadb"]
# The connection names config/database.py gives each engine.
CONNECTION_NAMES = {"sqlite": "sqlite", "postgresql": "pgsql", "mariadb": "mysql"}
URL_VARIABLES = {"sqlite": "DB_SQLITE_URL", "pgsql": "DB_PGSQL_URL", "mysql": "DB_MYSQL_URL"}
# Where a `ManualClock` starts: a whole second, so due times in milliseconds are exact.
START = 1_800_000_000.0


def new_key() -> str:
    """Return a fresh application key, as `craft key` makes them."""
    return "base64:" + base64.b64encode(secrets.token_bytes(32)).decode()


def engine_url(engine: str, folder: Path) -> str:
    """Return the URL of `engine`, skipping (or failing) the test if its server is down."""
    if engine == "sqlite":
        return f"sqlite:///{folder / 'queue.sqlite'}"
    require(engine)
    return URLS[engine]


def reset_tables(engine: Engine) -> None:
    """Create `queue_jobs` and `failed_jobs` if missing, and empty them."""
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(delete(queue_jobs))
        connection.execute(delete(failed_jobs))


def rows(engine: Engine, table: Any = queue_jobs) -> list[Any]:
    """Return every row of `table`, by id."""
    with engine.begin() as connection:
        return connection.execute(select(table).order_by(table.c.id)).all()


def insert_row(engine: Engine, payload: bytes, *, available_at: float, name: str) -> None:
    """Put a row straight into `queue_jobs`, as someone with database access could."""
    with engine.begin() as connection:
        connection.execute(
            insert(queue_jobs),
            {
                "uuid": secrets.token_hex(16),
                "queue": "default",
                "name": name,
                "payload": payload,
                "attempts": 0,
                "available_at": round(available_at * 1000),
                "created_at": dt.datetime.now(dt.UTC),
            },
        )


@dataclass
class Backend:
    """A database driver and everything around it, on one engine."""

    engine_name: str
    connection: str
    url: str
    key: str
    connections: Connections
    driver: DatabaseDriver
    store: DatabaseFailedJobStore
    queue: Queue
    runner: JobRunner
    clock: Clock

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine of the backend's connection."""
        return self.connections.engine(self.connection)

    def jobs(self) -> list[Any]:
        """Rows of `queue_jobs`."""
        return rows(self.engine)

    def failures(self) -> list[Any]:
        """Rows of `failed_jobs`."""
        return rows(self.engine, failed_jobs)


@contextlib.contextmanager
def open_backend(
    engine_name: str,
    folder: Path,
    clock: Clock | None = None,
    retry_after: float = 60.0,
    reset: bool = True,
) -> Iterator[Backend]:
    """Yield a `Backend` on `engine_name` with empty tables; close its pools afterwards."""
    url = engine_url(engine_name, folder)
    connection = CONNECTION_NAMES[engine_name]
    clock = clock or SystemClock()
    connections = Connections({connection: url}, connection)
    key = new_key()
    signer = Signer(key)
    driver = DatabaseDriver(
        connections, connection, retry_after=retry_after, prefetch=1, clock=clock
    )
    store = DatabaseFailedJobStore(connections, connection)
    queue = Queue({"database": lambda: driver}, "database", signer, clock=clock)
    runner = JobRunner(Container(), signer, store, clock=clock)
    if reset:
        reset_tables(connections.engine(connection))
    try:
        yield Backend(
            engine_name, connection, url, key, connections, driver, store, queue, runner, clock
        )
    finally:
        connections.close()


def drop_queue_jobs(engine: Engine) -> None:
    """Drop `queue_jobs` (a test of the missing-table error recreates it afterwards)."""
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS queue_jobs"))


# Projects and `craft` processes ----------------------------------------------------------


def make_project(folder: Path, retry_after: float | None = None, migrations: bool = True) -> Path:
    """Copy the repository's `config/`, `app/` and migrations into `folder/project`.

    With `retry_after`, the copy's `config/queue.py` leases jobs for that many
    seconds instead of 90; with `migrations=False`, `databases/migrations/`
    starts empty.
    """
    project = folder / "project"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "config", project / "config", ignore=ignore)
    shutil.copytree(ROOT / "app", project / "app", ignore=ignore)
    if migrations:
        shutil.copytree(
            ROOT / "databases" / "migrations", project / "databases" / "migrations", ignore=ignore
        )
    else:
        (project / "databases" / "migrations").mkdir(parents=True)
    (project / "storage").mkdir()
    if retry_after is not None:
        config = project / "config" / "queue.py"
        original = config.read_text()
        changed = original.replace('"retry_after": 90,', f'"retry_after": {retry_after!r},')
        assert changed != original, "config/queue.py no longer sets retry_after to 90"
        config.write_text(changed)
    return project


def project_env(project: Path, key: str | None, **settings: str) -> dict[str, str]:
    """Return the environment of a `craft` process in `project`.

    Settings of the test process (APP_*, DB_*, QUEUE_*) are dropped so only
    `settings` count; the SQLite connection points into the project's
    `storage/`, and the repository root is importable so workers can load the
    jobs of `tests/`.
    """
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("APP_", "DB_", "QUEUE_", "OUTBOX_", "CRAFT_"))
    }
    environment["PYTHONPATH"] = str(ROOT)
    environment["PYTHONUNBUFFERED"] = "1"
    environment["DB_SQLITE_URL"] = f"sqlite:///{project / 'storage' / 'database.sqlite'}"
    environment["DB_PGSQL_URL"] = URLS["postgresql"]
    environment["DB_MYSQL_URL"] = URLS["mariadb"]
    environment["OUTBOX_PATH"] = str(project / "storage" / "outbox.jsonl")
    if key is not None:
        environment["APP_KEY"] = key
    environment.update(settings)
    return environment


def backend_env(project: Path, backend: Backend, **settings: str) -> dict[str, str]:
    """The environment of a `craft` process whose queue and failed jobs live in `backend`."""
    return project_env(
        project,
        backend.key,
        **{
            URL_VARIABLES[backend.connection]: backend.url,
            "DB_CONNECTION": backend.connection,
            "QUEUE_DRIVER": "database",
            "QUEUE_DATABASE_CONNECTION": backend.connection,
            "QUEUE_FAILED_CONNECTION": backend.connection,
            **settings,
        },
    )


def craft(
    project: Path,
    environment: dict[str, str],
    *arguments: str,
    input: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run `craft *arguments` in `project`; stdin is closed unless `input` is given."""
    return subprocess.run(
        [str(CRAFT), *arguments],
        cwd=project,
        env=environment,
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class WorkerProcess:
    """A `craft queue:work` process whose output goes to files."""

    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path

    def output(self) -> str:
        """What the worker printed on stdout so far."""
        return self.stdout.read_text()

    def errors(self) -> str:
        """What the worker printed on stderr so far."""
        return self.stderr.read_text()

    def wait(self, timeout: float) -> int:
        """Wait for the worker to exit and return its status."""
        return self.process.wait(timeout=timeout)

    def signal(self, number: int) -> None:
        """Send `number` to the worker."""
        self.process.send_signal(number)

    def kill(self) -> None:
        """SIGKILL the worker if it still runs, and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def start_worker(
    project: Path, environment: dict[str, str], *arguments: str, tag: str = "worker"
) -> WorkerProcess:
    """Start `craft queue:work *arguments` in `project`."""
    logs = project / "logs"
    logs.mkdir(exist_ok=True)
    number = len(list(logs.glob("*.out")))
    stdout = logs / f"{tag}-{number}.out"
    stderr = logs / f"{tag}-{number}.err"
    # Appending: every write of the worker (and of its children, under
    # --concurrency) lands whole at the end, never over another's.
    with stdout.open("ab") as out, stderr.open("ab") as err:
        process = subprocess.Popen(
            [str(CRAFT), "queue:work", *arguments],
            cwd=project,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    return WorkerProcess(process, stdout, stderr)


@contextlib.contextmanager
def workers() -> Iterator[list[WorkerProcess]]:
    """Collect started workers; every one still running is killed at the end."""
    started: list[WorkerProcess] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.kill()


def wait_until(
    condition: Callable[[], Any], timeout: float, message: str, interval: float = 0.05
) -> Any:
    """Poll `condition` until it returns something true; fail with `message` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} (waited {timeout:g}s)")
        time.sleep(interval)
