"""`craft queue:table`, `craft migrate`, `migrate:status` and `migrate:rollback`, as processes."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine

from queueing.schema import failed_jobs, metadata, queue_jobs
from tests.database_fixtures import CONNECTION_NAMES, craft, make_project, new_key, project_env
from tests.services import URLS, require

CREATED = re.compile(
    r"^created databases/migrations/\d{4}_\d\d_\d\d_\d{6}_(?P<revision>[0-9a-f]{12})_"
    r"(?P<stem>create_(?:queue|failed)_jobs_table)\.py$"
)
# Tables `craft migrate` makes or uses on a server database shared with other tests.
MIGRATION_TABLES = ("queue_jobs", "failed_jobs", "alembic_version", "migration_batches")


class Project:
    """A project with no migrations yet, its SQLite database, and `craft` run in it."""

    def __init__(self, root: Path, environment: dict[str, str], url: str) -> None:
        self.root = root
        self.environment = environment
        self.engine: Engine = create_engine(url)

    def craft(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        """Run `craft *arguments` in the project."""
        return craft(self.root, self.environment, *arguments)

    def ok(self, *arguments: str) -> list[str]:
        """Run a command that must succeed; return its stdout lines."""
        result = self.craft(*arguments)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    def write(self, *flags: str) -> str:
        """Run `craft queue:table *flags` for one table; return the revision it wrote."""
        [line] = self.ok("queue:table", *flags)
        match = CREATED.match(line)
        assert match, line
        return match["revision"]

    def tables(self) -> set[str]:
        """The queue tables that exist."""
        return set(inspect(self.engine).get_table_names()) & {"queue_jobs", "failed_jobs"}

    def migrations(self) -> list[Path]:
        """The migration files written so far."""
        return sorted((self.root / "databases" / "migrations").glob("*.py"))


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    """A project whose `databases/migrations/` is empty, on a SQLite file."""
    root = make_project(tmp_path, migrations=False)
    url = f"sqlite:///{tmp_path / 'database.sqlite'}"
    project = Project(root, project_env(root, new_key(), DB_SQLITE_URL=url), url)
    yield project
    project.engine.dispose()


def test_queue_table_jobs_writes_the_queue_jobs_migration(project: Project) -> None:
    [line] = project.ok("queue:table", "--jobs")

    match = CREATED.match(line)
    assert match and match["stem"] == "create_queue_jobs_table"
    [path] = project.migrations()
    assert path.name.endswith(f"_{match['revision']}_create_queue_jobs_table.py")
    assert f'revision = "{match["revision"]}"' in path.read_text()


def test_queue_table_without_a_flag_writes_the_failed_jobs_migration(project: Project) -> None:
    [line] = project.ok("queue:table")

    match = CREATED.match(line)
    assert match and match["stem"] == "create_failed_jobs_table"
    assert len(project.migrations()) == 1


def test_queue_table_refuses_to_write_a_second_migration_for_a_table(project: Project) -> None:
    project.write("--jobs")
    project.write("--failed")

    for flags in (["--jobs"], ["--failed"], []):
        result = project.craft("queue:table", *flags)
        assert result.returncode != 0
        [line] = result.stderr.splitlines()
        assert re.match(
            r"^craft: databases/migrations/\S+_create_(queue|failed)_jobs_table\.py already "
            r"exists; not writing another$",
            line,
        ), line
    assert len(project.migrations()) == 2


def test_migrate_applies_the_pending_migrations_once_and_status_shows_them(
    project: Project,
) -> None:
    jobs_revision = project.write("--jobs")
    failed_revision = project.write("--failed")
    pending = project.ok("migrate:status")
    assert [line.split()[0] for line in pending] == ["pending", "pending"]

    assert project.ok("migrate") == [f"migrated {jobs_revision}", f"migrated {failed_revision}"]
    assert project.ok("migrate") == ["nothing to migrate"]

    assert project.tables() == {"queue_jobs", "failed_jobs"}
    status = project.ok("migrate:status")
    assert [line.split()[:3] for line in status] == [["ran", "(batch", "1)"]] * 2
    assert jobs_revision in status[0] and failed_revision in status[1]


def test_rollback_undoes_the_last_batch_only(project: Project) -> None:
    jobs_revision = project.write("--jobs")
    project.ok("migrate")
    failed_revision = project.write("--failed")
    project.ok("migrate")
    assert project.tables() == {"queue_jobs", "failed_jobs"}

    assert project.ok("migrate:rollback") == [f"rolled back {failed_revision}"]
    assert project.tables() == {"queue_jobs"}
    status = project.ok("migrate:status")
    assert status[0].startswith("ran (batch 1)") and jobs_revision in status[0]
    assert status[1].startswith("pending") and failed_revision in status[1]

    assert project.ok("migrate:rollback") == [f"rolled back {jobs_revision}"]
    assert project.tables() == set()
    assert project.ok("migrate:rollback") == ["nothing to roll back"]
    assert project.ok("migrate") == [f"migrated {jobs_revision}", f"migrated {failed_revision}"]
    assert project.tables() == {"queue_jobs", "failed_jobs"}


def test_rollback_of_a_batch_of_two_undoes_both(project: Project) -> None:
    jobs_revision = project.write("--jobs")
    failed_revision = project.write("--failed")
    project.ok("migrate")

    assert project.ok("migrate:rollback") == [
        f"rolled back {failed_revision}",
        f"rolled back {jobs_revision}",
    ]
    assert project.tables() == set()


def test_the_migrations_make_the_tables_the_driver_uses(project: Project) -> None:
    project.write("--jobs")
    project.write("--failed")
    project.ok("migrate")

    columns = inspect(project.engine).get_columns
    assert [column["name"] for column in columns("queue_jobs")] == list(queue_jobs.c.keys())
    assert [column["name"] for column in columns("failed_jobs")] == list(failed_jobs.c.keys())


def test_migrate_with_nothing_to_apply_says_so(project: Project) -> None:
    assert project.ok("migrate:status") == ["no migrations in databases/migrations/"]
    assert project.ok("migrate") == ["nothing to migrate"]
    assert project.ok("migrate:rollback") == ["nothing to roll back"]


def test_migrate_on_an_unknown_connection_is_one_line(project: Project) -> None:
    project.write("--jobs")

    result = project.craft("migrate", "--connection", "oracle")

    assert result.returncode != 0
    [line] = result.stderr.splitlines()
    assert line.startswith("craft: no database connection named 'oracle'")


# The shipped migrations on the database servers ------------------------------------------------


def drop_migration_tables(engine: Engine) -> None:
    """Drop what `craft migrate` creates, so each run starts from an empty database."""
    with engine.begin() as connection:
        for table in MIGRATION_TABLES:
            connection.execute(text(f"DROP TABLE IF EXISTS {table}"))


@pytest.mark.parametrize("engine_name", ["postgresql", "mariadb"])
def test_the_shipped_migrations_apply_and_roll_back_on_a_server(
    engine_name: str, tmp_path: Path
) -> None:
    require(engine_name)
    root = make_project(tmp_path)
    connection = CONNECTION_NAMES[engine_name]
    engine = create_engine(URLS[engine_name])
    environment = project_env(root, new_key())
    drop_migration_tables(engine)
    try:
        migrated = craft(root, environment, "migrate", "--connection", connection)
        assert migrated.returncode == 0, migrated.stderr
        assert len(migrated.stdout.splitlines()) == 2
        columns = inspect(engine).get_columns
        assert [column["name"] for column in columns("queue_jobs")] == list(queue_jobs.c.keys())
        assert [column["name"] for column in columns("failed_jobs")] == list(failed_jobs.c.keys())
        status = craft(root, environment, "migrate:status", "-c", connection).stdout.splitlines()
        assert [line.split()[0] for line in status] == ["ran", "ran"]

        rolled_back = craft(root, environment, "migrate:rollback", "-c", connection)
        assert rolled_back.returncode == 0, rolled_back.stderr
        assert not {"queue_jobs", "failed_jobs"} & set(inspect(engine).get_table_names())
    finally:
        drop_migration_tables(engine)
        metadata.create_all(engine)
        engine.dispose()
