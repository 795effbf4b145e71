"""How commands get the application: bootstrap once, with errors as one line."""

from __future__ import annotations

from functools import cache
from typing import Any

from container import Container
from craft.errors import CraftError
from providers import ConfigurationError, bootstrap
from queueing.connections import Connections, UnknownConnectionError


@cache
def application() -> Container:
    """Return the project's container, bootstrapped from the current directory."""
    try:
        return bootstrap()
    except ConfigurationError as error:
        raise CraftError(str(error)) from error


def make(key: Any) -> Any:
    """Resolve `key` from the project's container."""
    return application().make(key)


def connections() -> Connections:
    """Return the project's database connections, or stop with a clear line."""
    container = application()
    if not container.has(Connections):
        raise CraftError("no database connections: add DatabaseProvider to PROVIDERS")
    return container.make(Connections)


def engine_for(name: str | None) -> Any:
    """Return the engine of connection `name` (the default when None)."""
    try:
        return connections().engine(name)
    except UnknownConnectionError as error:
        raise CraftError(str(error)) from error
