"""Migrations: written into `databases/migrations/`, applied and tracked by Alembic.

Alembic records the current revision in `alembic_version`; craft adds
`migration_batches`, which remembers which revisions each `craft migrate`
applied, so `craft migrate:rollback` undoes exactly the last run.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Integer, MetaData, String, Table, delete, func, insert, select
from sqlalchemy.engine import Engine

MIGRATIONS_FOLDER = Path("databases") / "migrations"
TEMPLATES = {
    "jobs": ("create_queue_jobs_table", "create_queue_jobs_table.py.tpl"),
    "failed": ("create_failed_jobs_table", "create_failed_jobs_table.py.tpl"),
}

_batches_metadata = MetaData()
migration_batches = Table(
    "migration_batches",
    _batches_metadata,
    Column("revision", String(64), primary_key=True),
    Column("batch", Integer, nullable=False),
)


class MigrationError(RuntimeError):
    """A migration cannot be written, applied or undone."""


@dataclass(frozen=True)
class MigrationState:
    """One migration file and whether it ran."""

    revision: str
    description: str
    path: str
    batch: int | None

    @property
    def ran(self) -> bool:
        """Say whether the migration has been applied."""
        return self.batch is not None


class Migrator:
    """Writes, applies, lists and rolls back the project's migrations."""

    def __init__(self, root: Path) -> None:
        self.folder = root / MIGRATIONS_FOLDER

    def written(self, table: str) -> bool:
        """Say whether the migration creating `table` (`queue_jobs`, `failed_jobs`) is written."""
        stem = f"create_{table}_table"
        return self.folder.is_dir() and any(self.folder.glob(f"*_{stem}.py"))

    def write(self, table: str) -> Path:
        """Write the migration creating `table` (`jobs` or `failed`); refuse a second one."""
        stem, template_name = TEMPLATES[table]
        self.folder.mkdir(parents=True, exist_ok=True)
        existing = sorted(self.folder.glob(f"*_{stem}.py"))
        if existing:
            raise MigrationError(
                f"{MIGRATIONS_FOLDER.as_posix()}/{existing[0].name} already exists; "
                "not writing another"
            )
        head = self._scripts().get_current_head() if any(self.folder.glob("*.py")) else None
        revision = uuid.uuid4().hex[:12]
        now = dt.datetime.now(dt.UTC)
        template = resources.files("craft").joinpath(f"templates/{template_name}").read_text()
        text = (
            template.replace("{revision}", revision)
            .replace("{down_revision_literal}", repr(head))
            .replace("{down_revision}", head or "(none)")
            .replace("{created}", now.isoformat(timespec="seconds"))
        )
        path = self.folder / f"{now:%Y_%m_%d_%H%M%S}_{revision}_{stem}.py"
        path.write_text(text)
        return path

    def migrate(self, engine: Engine) -> list[str]:
        """Apply every pending migration; return the revisions applied, in order."""
        pending = [state.revision for state in self.status(engine) if not state.ran]
        if not pending:
            return []
        with engine.begin() as connection:
            _batches_metadata.create_all(connection)
            batch = connection.execute(select(func.max(migration_batches.c.batch))).scalar() or 0
            config = self._config()
            config.attributes["connection"] = connection
            command.upgrade(config, "heads")
            connection.execute(
                insert(migration_batches),
                [{"revision": revision, "batch": batch + 1} for revision in pending],
            )
        return pending

    def rollback(self, engine: Engine) -> list[str]:
        """Undo the migrations of the last batch; return the revisions undone."""
        states = self.status(engine)
        ran = [state for state in states if state.ran]
        if not ran:
            return []
        last = max(state.batch or 0 for state in ran)
        undone = [state.revision for state in ran if state.batch == last]
        first = self._scripts().get_revision(undone[0])
        target = first.down_revision or "base"
        with engine.begin() as connection:
            config = self._config()
            config.attributes["connection"] = connection
            command.downgrade(config, str(target))
            connection.execute(
                delete(migration_batches).where(migration_batches.c.revision.in_(undone))
            )
        return list(reversed(undone))

    def status(self, engine: Engine) -> list[MigrationState]:
        """Return every migration, oldest first, with the batch it ran in (None: pending)."""
        if not self.folder.is_dir() or not any(self.folder.glob("*.py")):
            return []
        scripts = self._scripts()
        with engine.begin() as connection:
            applied = set(MigrationContext.configure(connection).get_current_heads())
            _batches_metadata.create_all(connection)
            batches: dict[str, int] = dict(
                connection.execute(
                    select(migration_batches.c.revision, migration_batches.c.batch)
                ).all()
            )
        ran: set[str] = set()
        for head in applied:
            ran.update(script.revision for script in scripts.iterate_revisions(head, "base"))
        return [
            MigrationState(
                revision=script.revision,
                description=(script.doc or "").splitlines()[0] if script.doc else "",
                path=Path(script.path).name,
                batch=batches.get(script.revision, 0) if script.revision in ran else None,
            )
            for script in reversed(list(scripts.walk_revisions()))
        ]

    def _config(self) -> Config:
        config = Config()
        location = resources.files("craft").joinpath("migrations/alembic")
        config.set_main_option("script_location", str(location))
        config.set_main_option("version_locations", str(self.folder))
        config.set_main_option("path_separator", "os")
        return config

    def _scripts(self) -> ScriptDirectory:
        try:
            return ScriptDirectory.from_config(self._config())
        except Exception as error:
            raise MigrationError(f"cannot read {MIGRATIONS_FOLDER.as_posix()}: {error}") from error
