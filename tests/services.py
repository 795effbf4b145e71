"""Reaching the real servers the tests need, and what to do when one is missing.

A test that needs PostgreSQL, MariaDB or RabbitMQ asks `require(name)`. When
the server does not answer, the test is skipped with the reason, unless
QUEUE_REQUIRE_SERVICES=1 (as in CI), where a missing server fails the test.
"""

from __future__ import annotations

import os
import socket

import pytest

SERVICES = {
    "postgresql": ("127.0.0.1", 5432),
    "mariadb": ("127.0.0.1", 3306),
    "rabbitmq": ("127.0.0.1", 5672),
}

URLS = {
    "postgresql": os.environ.get(
        "TEST_POSTGRESQL_URL", "postgresql+psycopg://root@127.0.0.1:5432/test"
    ),
    "mariadb": os.environ.get("TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
    "sqlite": "",  # made per test under tmp_path
}


def answers(name: str, timeout: float = 1.0) -> bool:
    """Say whether the server `name` accepts TCP connections on loopback."""
    host, port = SERVICES[name]
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def services_required() -> bool:
    """Whether a missing server is a failure rather than a skip."""
    return os.environ.get("QUEUE_REQUIRE_SERVICES") == "1"


def require(name: str) -> None:
    """Skip (or, with QUEUE_REQUIRE_SERVICES=1, fail) unless the server `name` answers."""
    if answers(name):
        return
    host, port = SERVICES[name]
    reason = f"{name} is not answering on {host}:{port}"
    if services_required():
        pytest.fail(f"{reason}, and QUEUE_REQUIRE_SERVICES=1 requires it", pytrace=False)
    pytest.skip(reason)
