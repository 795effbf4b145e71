"""Connection settings: parts or a URL, credentials, the environment `config/queue.py` reads."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest

from container import Container
from providers.configuration import Configuration
from providers.queue_provider import DRIVERS, read_queue_config
from queueing.drivers.amqp import (
    AmqpDriver,
    AmqpUnavailableError,
)
from tests.queueing.drivers import jobs_for_amqp as jobs
from tests.queueing.drivers.amqp.support import (
    ROOT,
    Broker,
    queue_on,
    rabbitmqctl,
    reserve,
)


@pytest.fixture
def special_user(broker: Broker) -> Iterator[tuple[str, str]]:
    """A broker user whose password holds `@:/%`, deleted after the test."""
    user = f"test-amqp-{uuid.uuid4().hex[:8]}"
    password = "p@ss:w/rd%41"
    rabbitmqctl("add_user", user, password)
    try:
        rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        yield user, password
    finally:
        rabbitmqctl("delete_user", user)


def round_trip(driver: AmqpDriver, key: str, queue_name: str) -> None:
    """Push one job through `driver`, take it back, and close the driver."""
    try:
        queue_on(driver, key).push(jobs.Numbered(1), args=["/x"])
        assert driver.acknowledge(reserve(driver, queue_name))
    finally:
        driver.close()


def test_port_and_vhost_none_mean_5672_and_the_root_vhost(
    key: str, broker: Broker, queue_name: str
) -> None:
    build = DRIVERS["amqp"][0]
    driver = build(Container(), {"port": None, "vhost": None, "channel": queue_name})

    assert isinstance(driver, AmqpDriver)
    assert (driver.parameters.port, driver.parameters.virtual_host) == (5672, "/")
    round_trip(driver, key, queue_name)


def test_a_password_with_special_characters_works_from_settings_and_from_a_url(
    special_user: tuple[str, str],
    drivers: Callable[..., AmqpDriver],
    key: str,
    broker: Broker,
    queue_name: str,
) -> None:
    user, password = special_user
    build = DRIVERS["amqp"][0]
    settings = {"username": user, "password": password, "channel": queue_name}
    url = f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:5672/%2F"
    from_url = drivers(url=url, queue=queue_name, heartbeat=5)

    round_trip(build(Container(), settings), key, queue_name)
    round_trip(from_url, key, queue_name)
    assert from_url.parameters.credentials.password == password
    assert from_url.parameters.heartbeat == 5
    assert password not in from_url.where


def test_amqp_settings_are_read_from_the_environment_by_config_queue(
    key: str, broker: Broker, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def configured_driver() -> AmqpDriver:
        _default, settings = read_queue_config(Configuration(ROOT))
        driver = DRIVERS["amqp"][0](Container(), settings["amqp"])
        assert isinstance(driver, AmqpDriver)
        return driver

    monkeypatch.setenv("QUEUE_AMQP_CHANNEL", queue_name)
    monkeypatch.setenv("QUEUE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    monkeypatch.setenv("QUEUE_AMQP_CONNECTION_ATTEMPTS", "5")
    monkeypatch.setenv("QUEUE_AMQP_HEARTBEAT", "7")
    monkeypatch.setenv("QUEUE_AMQP_PREFETCH", "4")
    from_url = configured_driver()
    monkeypatch.delenv("QUEUE_AMQP_URL")
    monkeypatch.setenv("QUEUE_AMQP_PORT", "none")
    monkeypatch.setenv("QUEUE_AMQP_PASSWORD", "guest")
    from_parts = configured_driver()

    for driver in (from_url, from_parts):
        parameters = driver.parameters
        assert (parameters.host, parameters.port, parameters.virtual_host) == (
            "127.0.0.1",
            5672,
            "/",
        )
        assert (parameters.connection_attempts, parameters.heartbeat, driver.prefetch) == (5, 7, 4)
        assert driver.default_queue == queue_name
        round_trip(driver, key, queue_name)


def test_a_wrong_password_is_refused_with_a_clear_error(
    drivers: Callable[..., AmqpDriver], key: str, queue_name: str
) -> None:
    driver = drivers(password="not-the-password", queue=queue_name)

    with pytest.raises(AmqpUnavailableError, match="refused the login"):
        driver.check()
