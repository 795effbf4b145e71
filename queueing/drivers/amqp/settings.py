"""The amqp driver's connection settings, turned into pika's parameters.

Providers hand the driver its settings (host and port, or one URL); this
module is the only place that knows how pika wants them.
"""

from __future__ import annotations

import copy
from typing import TypeAlias
from urllib.parse import parse_qs, urlsplit

import pika

DEFAULT_PORT = 5672
DEFAULT_VHOST = "/"
# Messages a worker holds unacknowledged per queue: the one running and those
# already on their way to it.
DEFAULT_PREFETCH = 100

Parameters: TypeAlias = pika.ConnectionParameters | pika.URLParameters


def connection_parameters(
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    username: str = "guest",
    password: str = "guest",
    vhost: str | None = None,
    url: str | None = None,
    connection_attempts: int = 3,
    heartbeat: int | None = 60,
    blocked_connection_timeout: float | None = 60.0,
) -> Parameters:
    """Return pika's parameters from the settings; `url` wins over the parts.

    From parts, the credentials are handed to pika as they are, never put
    into a URL, so any character is safe; `port` None means 5672 and `vhost`
    None means "/". A URL must percent-encode them itself; settings its query
    string does not give (`heartbeat`, `connection_attempts`,
    `blocked_connection_timeout`) are taken from the arguments.
    """
    if url:
        parameters = pika.URLParameters(url)
        given = parse_qs(urlsplit(url).query)
        if "heartbeat" not in given:
            parameters.heartbeat = heartbeat
        if "connection_attempts" not in given:
            parameters.connection_attempts = connection_attempts
        if "blocked_connection_timeout" not in given:
            parameters.blocked_connection_timeout = blocked_connection_timeout
        return parameters
    return pika.ConnectionParameters(
        host=host,
        port=DEFAULT_PORT if port is None else int(port),
        virtual_host=vhost or DEFAULT_VHOST,
        credentials=pika.PlainCredentials(username, password),
        heartbeat=heartbeat,
        connection_attempts=connection_attempts,
        retry_delay=0.5,
        blocked_connection_timeout=blocked_connection_timeout,
    )


def broker_address(parameters: Parameters) -> str:
    """Where the broker is, `host:port/vhost`, without credentials: for messages and counts."""
    vhost = parameters.virtual_host
    path = "/" if vhost == "/" else f"/{vhost}"
    return f"{parameters.host}:{parameters.port}{path}"


def named(parameters: Parameters, name: str) -> Parameters:
    """A copy of `parameters` whose connection shows as `name` in the broker's tools."""
    renamed = copy.copy(parameters)
    renamed.client_properties = {"connection_name": name}
    return renamed
