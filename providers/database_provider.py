"""`DatabaseProvider`: binds the named connections of `config/database.py`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from providers.configuration import Configuration, ConfigurationError
from providers.provider import ServiceProvider
from queueing.connections import Connections


class DatabaseProvider(ServiceProvider):
    """Binds `Connections`: connection name -> database, opened on first use."""

    def register(self) -> None:
        """Read `DEFAULT` and `CONNECTIONS` and bind one `Connections` for the process."""
        configuration = self.container.make(Configuration)
        default, urls = read_database_config(configuration)
        self.container.instance(Connections, Connections(urls, default))


def read_database_config(configuration: Configuration) -> tuple[str, dict[str, str]]:
    """Return the default connection and every connection's URL, checked.

    A relative SQLite path is taken from the project root, so every process
    started from anywhere opens the same file.
    """
    connections = configuration.get("database", "CONNECTIONS", {})
    if not isinstance(connections, Mapping) or not connections:
        raise ConfigurationError("config/database.py: CONNECTIONS must name at least one URL")
    urls: dict[str, str] = {}
    for name, url in connections.items():
        try:
            parsed = make_url(str(url))
        except ArgumentError as error:
            raise ConfigurationError(
                f"config/database.py: connection {name!r} has an unreadable URL: {error}"
            ) from error
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            path = Path(str(parsed.database))
            if not path.is_absolute():
                path = configuration.root / path
            path.parent.mkdir(parents=True, exist_ok=True)
            parsed = parsed.set(database=str(path))
        urls[name] = parsed.render_as_string(hide_password=False)
    default = configuration.get("database", "DEFAULT", next(iter(urls)))
    if default not in urls:
        raise ConfigurationError(
            f"config/database.py: DEFAULT is {default!r}, which CONNECTIONS does not define"
        )
    return default, urls
