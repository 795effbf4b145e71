"""Database connections by name, each a `records.Database` over a SQLAlchemy engine.

Besides the pools, a thread may keep DBAPI connections of its own
(`kept`): a worker reserving and settling jobs runs two or three short
statements per job, and checking a pooled connection out (and pinging it)
for each would cost more than the statements themselves.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

import records
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url


class UnknownConnectionError(LookupError):
    """A connection name that `config/database.py` does not define."""


def _configure_sqlite(engine: Engine) -> None:
    """WAL, a busy timeout, and `BEGIN IMMEDIATE` so reserving a job is one write transaction."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class Connections:
    """Opens each named database on first use and keeps it for the process."""

    def __init__(self, urls: Mapping[str, str], default: str) -> None:
        self.urls = dict(urls)
        self.default = default
        self._databases: dict[str, records.Database] = {}
        self._kept: dict[tuple[int, str, str], Any] = {}
        self._lock = threading.Lock()

    def url(self, name: str | None = None) -> str:
        """Return the URL of connection `name` (the default when None)."""
        name = name or self.default
        if name not in self.urls:
            raise UnknownConnectionError(
                f"no database connection named {name!r} in config/database.py "
                f"(defined: {', '.join(sorted(self.urls))})"
            )
        return self.urls[name]

    def database(self, name: str | None = None) -> records.Database:
        """Return the `records.Database` of connection `name`."""
        name = name or self.default
        url = self.url(name)
        with self._lock:
            if name not in self._databases:
                options: dict[str, object] = {"pool_pre_ping": True}
                if make_url(url).get_backend_name() != "sqlite":
                    options["pool_recycle"] = 1800
                database = records.Database(url, **options)
                if database.get_engine().dialect.name == "sqlite":
                    _configure_sqlite(database.get_engine())
                self._databases[name] = database
            return self._databases[name]

    def engine(self, name: str | None = None) -> Engine:
        """Return the SQLAlchemy engine of connection `name`."""
        return self.database(name).get_engine()

    def kept(
        self,
        name: str | None = None,
        role: str = "work",
        setup: Callable[[Any, str], None] | None = None,
    ) -> Any:
        """Return the DBAPI connection this thread keeps on `name` for `role`, in autocommit.

        It is opened on first use and stays open until `discard` or `close`;
        statements on it commit one by one unless the caller sends `BEGIN`.
        `setup(connection, dialect)` runs once on a newly opened connection.
        """
        key = (threading.get_ident(), name or self.default, role)
        connection = self._kept.get(key)
        if connection is None:
            engine = self.engine(key[1])
            connection = _autocommit(engine.raw_connection())
            if setup is not None:
                try:
                    setup(connection, engine.dialect.name)
                except BaseException:
                    _close_quietly(connection)
                    raise
            with self._lock:
                self._kept[key] = connection
        return connection

    def discard(self, name: str | None = None, role: str = "work") -> None:
        """Close and forget this thread's kept connection (after it failed)."""
        key = (threading.get_ident(), name or self.default, role)
        with self._lock:
            connection = self._kept.pop(key, None)
        if connection is not None:
            _close_quietly(connection)

    def close(self) -> None:
        """Close every open connection pool and every kept connection."""
        with self._lock:
            databases, self._databases = list(self._databases.values()), {}
            kept, self._kept = list(self._kept.values()), {}
        for connection in kept:
            _close_quietly(connection)
        for database in databases:
            database.close()


def _autocommit(pooled: Any) -> Any:
    """Take a connection out of its pool for good and switch it to autocommit."""
    connection = pooled.dbapi_connection
    pooled.detach()
    connection.rollback()  # a pool ping may have opened a transaction
    if hasattr(connection, "autocommit") and not callable(connection.autocommit):
        connection.autocommit = True  # psycopg
    elif hasattr(connection, "autocommit"):
        connection.autocommit(True)  # PyMySQL
    else:
        connection.isolation_level = None  # sqlite3
    return connection


def _close_quietly(connection: Any) -> None:
    # A connection that failed may fail again on close; it is gone either way.
    with contextlib.suppress(Exception):
        connection.close()
