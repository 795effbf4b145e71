"""`QueueProvider`: binds the queue, its drivers and the execution path from `config/queue.py`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from container import Container
from providers.configuration import Configuration, ConfigurationError
from providers.provider import ServiceProvider
from queueing import FailedJobStore, JobRunner, LoggingFailedJobStore, Queue, Signer
from queueing.connections import Connections
from queueing.drivers import AsyncDriver, Driver, SyncDriver
from queueing.drivers.amqp import AmqpDriver
from queueing.drivers.database import DatabaseDriver
from queueing.failed import DatabaseFailedJobStore

DriverBuilder = Callable[[Container, dict[str, Any]], Driver]


def _build_async(container: Container, settings: dict[str, Any]) -> Driver:
    return AsyncDriver(
        container.make(JobRunner),
        mode=settings.get("mode", "threading"),
        workers=settings.get("workers"),
        blocking=bool(settings.get("blocking", False)),
        container_factory=container.make("container.factory")
        if container.has("container.factory")
        else None,
        exit_grace=float(settings.get("exit_grace", 30.0)),
    )


def _build_sync(container: Container, settings: dict[str, Any]) -> Driver:
    return SyncDriver(container.make(JobRunner), raise_errors=bool(settings.get("raise_errors")))


def _build_database(container: Container, settings: dict[str, Any]) -> Driver:
    if not container.has(Connections):
        raise ConfigurationError(
            "the database queue driver needs DatabaseProvider in config/application.py PROVIDERS"
        )
    return DatabaseDriver(
        container.make(Connections),
        connection=settings.get("channel"),
        queue=settings.get("queue", "default"),
        retry_after=float(settings.get("retry_after", 90)),
        prefetch=int(settings.get("prefetch", 1)),
    )


def _build_amqp(container: Container, settings: dict[str, Any]) -> Driver:
    heartbeat = settings.get("heartbeat", 60)
    blocked = settings.get("blocked_connection_timeout", 60)
    return AmqpDriver(
        host=settings.get("host") or "127.0.0.1",
        port=settings.get("port"),
        username=str(settings.get("username", "guest")),
        password=str(settings.get("password", "guest")),
        vhost=settings.get("vhost"),
        queue=settings.get("channel") or "default",
        url=settings.get("url") or None,
        connection_attempts=int(settings.get("connection_attempts", 3)),
        heartbeat=None if heartbeat is None else int(heartbeat),
        prefetch=int(settings.get("prefetch", 1)),
        publish_attempts=int(settings.get("publish_attempts", 3)),
        blocked_connection_timeout=None if blocked is None else float(blocked),
    )


# Each driver: how to build it, and the settings it understands.
DRIVERS: dict[str, tuple[DriverBuilder, frozenset[str]]] = {
    "async": (_build_async, frozenset({"mode", "workers", "blocking", "exit_grace"})),
    "sync": (_build_sync, frozenset({"raise_errors"})),
    "database": (
        _build_database,
        frozenset({"channel", "queue", "retry_after", "prefetch"}),
    ),
    "amqp": (
        _build_amqp,
        frozenset(
            {
                "username",
                "password",
                "host",
                "port",
                "vhost",
                "channel",
                "url",
                "connection_attempts",
                "heartbeat",
                "prefetch",
                "publish_attempts",
                "blocked_connection_timeout",
            }
        ),
    ),
}


def driver_key(name: str) -> str:
    """Return the container key the driver `name` is bound under."""
    return f"queue.drivers.{name}"


class QueueProvider(ServiceProvider):
    """Binds `Signer`, `FailedJobStore`, `JobRunner`, each driver and `Queue`.

    `config/queue.py` names the default driver in `DRIVER` and each driver's
    settings in `DRIVERS`; the `sync` driver is always available. The key
    comes from `config/application.py` `KEY`. Failed jobs of every driver go
    to the `failed_jobs` table of `FAILED_CONNECTION` (default: the default
    database connection) when `DatabaseProvider` is listed; otherwise, or
    while the table is missing, they are logged.
    """

    def register(self) -> None:
        """Bind the queue services; drivers are built on first use."""
        container = self.container
        configuration = container.make(Configuration)
        default, settings = read_queue_config(configuration)

        container.instance(Signer, Signer(configuration.get("application", "KEY")))
        failed_connection = configuration.get("queue", "FAILED_CONNECTION")
        if container.has(Connections):
            container.singleton(
                FailedJobStore,
                lambda: DatabaseFailedJobStore(container.make(Connections), failed_connection),
            )
        else:
            container.singleton(FailedJobStore, LoggingFailedJobStore)
        container.singleton(JobRunner)
        for name, driver_settings in settings.items():
            builder = DRIVERS[name][0]
            container.singleton(
                driver_key(name),
                lambda builder=builder, driver_settings=driver_settings: builder(
                    container, driver_settings
                ),
            )
        container.singleton(
            Queue,
            lambda: Queue(
                {name: _resolver(container, driver_key(name)) for name in settings},
                default,
                container.make(Signer),
            ),
        )


def read_queue_config(configuration: Configuration) -> tuple[str, dict[str, dict[str, Any]]]:
    """Return the default driver and each driver's settings, checked."""
    drivers = configuration.get("queue", "DRIVERS", {}) or {}
    if not isinstance(drivers, Mapping):
        raise ConfigurationError("config/queue.py: DRIVERS must be a dict of driver settings")
    settings: dict[str, dict[str, Any]] = {"sync": {}}
    for name, values in drivers.items():
        if name not in DRIVERS:
            raise ConfigurationError(
                f"config/queue.py: DRIVERS names {name!r}, which is not a driver "
                f"(known: {', '.join(sorted(DRIVERS))})"
            )
        values = dict(values or {})
        unknown = set(values) - DRIVERS[name][1]
        if unknown:
            raise ConfigurationError(
                f"config/queue.py: DRIVERS[{name!r}] has unknown setting(s) "
                f"{', '.join(sorted(unknown))} (known: {', '.join(sorted(DRIVERS[name][1]))})"
            )
        settings[name] = values
    default = configuration.get("queue", "DRIVER", "async")
    if default not in settings:
        raise ConfigurationError(
            f"config/queue.py: DRIVER is {default!r}, which DRIVERS does not configure "
            f"(configured: {', '.join(sorted(settings))})"
        )
    return default, settings


def _resolver(container: Container, key: str) -> Callable[[], Driver]:
    return lambda: container.make(key)
