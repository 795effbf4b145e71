"""The local servers the benchmark talks to: addresses, health, versions and clean-up.

Every address is on 127.0.0.1 and fixed here: the harness never contacts
anything else. Each row keeps its data apart (its own PostgreSQL schema,
MariaDB database, RabbitMQ queue, Redis keys or SQLite file) and removes it
afterwards.
"""

from __future__ import annotations

import contextlib
import socket
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Server:
    """One local server."""

    title: str
    port: int


SERVERS = {
    "rabbitmq": Server("RabbitMQ", 5672),
    "postgresql": Server("PostgreSQL", 5432),
    "mariadb": Server("MariaDB", 3306),
    "redis": Server("Redis", 6379),
}

AMQP_URL = f"amqp://guest:guest@{HOST}:5672/%2F"
REDIS_URL = f"redis://{HOST}:6379/0"
POSTGRES_DATABASE = "test"
MARIADB_USER = "root"


def answers(port: int, timeout: float = 1.0) -> bool:
    """Say whether something listens on 127.0.0.1:`port`."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def down(name: str) -> str | None:
    """Return why server `name` cannot be used, or None when it answers."""
    server = SERVERS[name]
    if answers(server.port):
        return None
    return f"server down: {server.title} on {HOST}:{server.port}"


# PostgreSQL -------------------------------------------------------------------------


def postgres_dsn(schema: str | None = None) -> str:
    """A libpq URL for the test database, its search_path set to `schema`."""
    dsn = f"postgresql://root@{HOST}:5432/{POSTGRES_DATABASE}"
    if schema:
        dsn += "?options=" + urllib.parse.quote(f"-csearch_path={schema}")
    return dsn


def postgres_execute(*statements: str, schema: str | None = None) -> None:
    """Run `statements` on the test database (in `schema`), in autocommit."""
    import psycopg

    with psycopg.connect(postgres_dsn(schema), autocommit=True, connect_timeout=5) as connection:
        for statement in statements:
            connection.execute(statement)  # type: ignore[arg-type]


def recreate_schema(schema: str) -> None:
    """Drop the PostgreSQL schema `schema` with everything in it, then create it empty."""
    postgres_execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE', f'CREATE SCHEMA "{schema}"')


def drop_schema(schema: str) -> None:
    """Drop the PostgreSQL schema `schema` with everything in it."""
    postgres_execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# MariaDB ----------------------------------------------------------------------------


def mariadb_execute(*statements: str) -> None:
    """Run `statements` on the MariaDB server (no database selected)."""
    import pymysql

    connection = pymysql.connect(host=HOST, port=3306, user=MARIADB_USER, connect_timeout=5)
    try:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
        connection.commit()
    finally:
        connection.close()


# RabbitMQ ---------------------------------------------------------------------------


@contextlib.contextmanager
def amqp_channel() -> Iterator[Any]:
    """A pika channel on the local RabbitMQ (guest/guest, vhost /)."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL + "?connection_attempts=1"))
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


def purge_queue(name: str) -> int:
    """Remove the ready messages of queue `name`; return how many (0 if it does not exist)."""
    import pika.exceptions

    with amqp_channel() as channel:
        try:
            channel.queue_declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return 0
        return int(channel.queue_purge(name).method.message_count)


def delete_queues(*names: str) -> None:
    """Delete RabbitMQ queues `names` with their messages (missing ones are fine)."""
    with amqp_channel() as channel:
        for name in names:
            channel.queue_delete(name)


# Versions ---------------------------------------------------------------------------


def versions() -> dict[str, str]:
    """Each answering server's version (or why it could not be read)."""
    readers = {
        "postgresql": _postgres_version,
        "mariadb": _mariadb_version,
        "rabbitmq": _rabbitmq_version,
        "redis": _redis_version,
    }
    found: dict[str, str] = {}
    for name, reader in readers.items():
        title = SERVERS[name].title
        if not answers(SERVERS[name].port):
            found[title] = "not running"
            continue
        try:
            found[title] = reader()
        except Exception as error:
            found[title] = f"unknown ({type(error).__name__}: {error})"
    import sqlite3

    found["SQLite"] = sqlite3.sqlite_version
    return found


def _postgres_version() -> str:
    import psycopg

    with psycopg.connect(postgres_dsn(), connect_timeout=5) as connection:
        row = connection.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"


def _mariadb_version() -> str:
    import pymysql

    connection = pymysql.connect(host=HOST, port=3306, user=MARIADB_USER, connect_timeout=5)
    try:
        return str(connection.get_server_info()).removeprefix("5.5.5-")
    finally:
        connection.close()


def _rabbitmq_version() -> str:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL + "?connection_attempts=1"))
    try:
        version = connection._impl.server_properties.get("version", b"?")
        return version.decode() if isinstance(version, bytes) else str(version)
    finally:
        connection.close()


def _redis_version() -> str:
    with socket.create_connection((HOST, 6379), timeout=5) as connection:
        connection.sendall(b"INFO server\r\n")
        data = b""
        while b"redis_version:" not in data or not data.endswith(b"\r\n"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            data += chunk
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("redis_version:"):
            return line.partition(":")[2].strip()
    return "?"
