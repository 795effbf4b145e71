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

# The driver `Queue.push` uses when config/queue.py names none.
DEFAULT_DRIVER = "database"


def _given(settings: dict[str, Any], **names: str) -> dict[str, Any]:
    """The constructor arguments for the settings present, by their argument names.

    A setting left out gets the constructor's own default, so every default
    lives in one place: the driver.
    """
    return {argument: settings[key] for key, argument in names.items() if key in settings}


def _build_async(container: Container, settings: dict[str, Any]) -> Driver:
    arguments = _given(
        settings, mode="mode", workers="workers", blocking="blocking", exit_grace="exit_grace"
    )
    if "blocking" in arguments:
        arguments["blocking"] = bool(arguments["blocking"])
    return AsyncDriver(
        container.make(JobRunner),
        container_factory=container.make("container.factory")
        if container.has("container.factory")
        else None,
        **arguments,
    )


def _build_sync(container: Container, settings: dict[str, Any]) -> Driver:
    arguments = _given(settings, raise_errors="raise_errors")
    return SyncDriver(container.make(JobRunner), **arguments)


def _build_database(container: Container, settings: dict[str, Any]) -> Driver:
    if not container.has(Connections):
        raise ConfigurationError(
            "the database queue driver needs DatabaseProvider in config/application.py PROVIDERS"
        )
    arguments = _given(
        settings,
        channel="connection",
        queue="queue",
        retry_after="retry_after",
        prefetch="prefetch",
    )
    return DatabaseDriver(container.make(Connections), **_numbers(arguments))


def _build_amqp(container: Container, settings: dict[str, Any]) -> Driver:
    arguments = _given(
        settings,
        host="host",
        port="port",
        username="username",
        password="password",
        vhost="vhost",
        channel="queue",
        url="url",
        connection_attempts="connection_attempts",
        heartbeat="heartbeat",
        prefetch="prefetch",
        publish_attempts="publish_attempts",
        blocked_connection_timeout="blocked_connection_timeout",
    )
    for text in ("username", "password"):
        if text in arguments:
            arguments[text] = str(arguments[text])
    for optional in ("host", "queue", "url"):
        if optional in arguments and not arguments[optional]:
            del arguments[optional]
    return AmqpDriver(**_numbers(arguments))


# Settings read from the environment may arrive as text; these are numbers.
_INTEGERS = ("prefetch", "connection_attempts", "publish_attempts", "heartbeat", "port")
_FLOATS = ("retry_after", "blocked_connection_timeout")


def _numbers(arguments: dict[str, Any]) -> dict[str, Any]:
    """`arguments` with numeric settings made numbers (None kept: it means "none")."""
    for name, kind in [*((n, int) for n in _INTEGERS), *((n, float) for n in _FLOATS)]:
        if arguments.get(name) is not None:
            arguments[name] = kind(arguments[name])
    return arguments


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
    comes from `config/application.py` `KEY`, the keys before the last
    rotations from `PREVIOUS_KEYS`. Failed jobs of every driver go
    to the `failed_jobs` table of `FAILED_CONNECTION` (default: the default
    database connection) when `DatabaseProvider` is listed; otherwise, or
    while the table is missing, they are logged.
    """

    def register(self) -> None:
        """Bind the queue services; drivers are built on first use."""
        container = self.container
        configuration = container.make(Configuration)
        default, settings = read_queue_config(configuration)

        container.instance(
            Signer,
            Signer(configuration.get("application", "KEY"), read_previous_keys(configuration)),
        )
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


def read_previous_keys(configuration: Configuration) -> list[str]:
    """Return `config/application.py` `PREVIOUS_KEYS` (default none), checked to be a list."""
    keys = configuration.get("application", "PREVIOUS_KEYS", None) or []
    if not isinstance(keys, list | tuple):
        raise ConfigurationError(
            "config/application.py: PREVIOUS_KEYS must be a list of keys "
            "(APP_PREVIOUS_KEYS holds them comma-separated)"
        )
    return list(keys)


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
    named = configuration.get("queue", "DRIVER", None)
    default = named or DEFAULT_DRIVER
    if not named and default not in settings:
        raise ConfigurationError(
            f"config/queue.py: DRIVER is not set, so the default {DEFAULT_DRIVER!r} is used, "
            f"but DRIVERS does not configure it (configured: {', '.join(sorted(settings))}); "
            "set DRIVER"
        )
    if default not in settings:
        raise ConfigurationError(
            f"config/queue.py: DRIVER is {default!r}, which DRIVERS does not configure "
            f"(configured: {', '.join(sorted(settings))})"
        )
    return default, settings


def _resolver(container: Container, key: str) -> Callable[[], Driver]:
    return lambda: container.make(key)
