"""`bootstrap()` and `QueueProvider`: from a project's config files to a ready container."""

from __future__ import annotations

import itertools
import os
import secrets
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.jobs.SendWelcomeEmail import SendWelcomeEmail
from app.services.outbox import Outbox
from container import Container, ResolutionError
from providers import Configuration, ConfigurationError, bootstrap
from queueing import FailedJobStore, JobRunner, Queue, Signer
from queueing.drivers import AsyncDriver, SyncDriver
from queueing.drivers.amqp import DEFAULT_PREFETCH as DEFAULT_AMQP_PREFETCH

APPLICATION = """
from providers import QueueProvider
from providers.environment import env

KEY = env("APP_KEY", None, cast=False)
PROVIDERS = [QueueProvider]
"""


# The job dict `Queue.push` signs for the function `print`.
JOB_FOR_PRINT = {"obj": print, "args": (), "kwargs": {}, "callback": "handle"}


def signed_body(queue: Queue, job: Any) -> bytes:
    """Sign `job` as `queue.push` would, without queueing it."""
    [envelope] = queue.prepare(
        (job,), args=(), kwargs=None, wait=None, channel=None, queue=None, callback="handle"
    )
    return envelope.body


@pytest.fixture
def make_project(tmp_path: Path, restore_sys_path: None) -> Callable[..., Path]:
    """Write a small project (config/application.py, config/queue.py) and return its root."""
    count = itertools.count(1)

    def make(queue: str = "", application: str = APPLICATION, dotenv: str | None = None) -> Path:
        root = tmp_path / f"project{next(count)}"
        (root / "config").mkdir(parents=True)
        (root / "config" / "application.py").write_text(textwrap.dedent(application))
        (root / "config" / "queue.py").write_text(textwrap.dedent(queue))
        if dotenv is not None:
            (root / ".env").write_text(textwrap.dedent(dotenv))
        return root

    return make


@pytest.fixture
def boot(app_key: str) -> Iterator[Callable[..., Container]]:
    """Bootstrap projects (with a key in the environment), closing their queues after."""
    containers: list[Container] = []

    def run(root: Path | None = None) -> Container:
        container = bootstrap(root)
        containers.append(container)
        return container

    yield run
    for container in containers:
        if container.has(Queue):
            container.make(Queue).close()


# This repository ----------------------------------------------------------------------


def test_bootstrap_binds_the_queue_with_the_configured_default_driver(app: Container) -> None:
    queue = app.make(Queue)

    assert isinstance(queue, Queue)
    assert queue.default == "database"
    assert {"async", "sync", "database"} <= set(queue.names)


def test_the_default_driver_follows_queue_driver_in_the_environment(
    app_environment: dict[str, Any],
    repo_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    boot: Callable[..., Container],
) -> None:
    monkeypatch.setenv("QUEUE_DRIVER", "async")

    queue = boot(repo_root).make(Queue)

    assert queue.default == "async"
    assert isinstance(queue.connection(), AsyncDriver)


def test_each_driver_is_bound_under_its_string_key(app: Container) -> None:
    queue = app.make(Queue)

    assert app.make("queue.drivers.sync") is queue.connection("sync")
    assert isinstance(app.make("queue.drivers.sync"), SyncDriver)


def test_bootstrap_binds_the_execution_path_once(app: Container) -> None:
    assert app.make(JobRunner) is app.make(JobRunner)
    assert app.make(JobRunner).failed_store is app.make(FailedJobStore)


def test_bootstrap_reads_the_key_from_the_environment(app: Container, app_key: str) -> None:
    body = signed_body(app.make(Queue), SendWelcomeEmail)

    assert Signer(app_key).load(body)["obj"] is SendWelcomeEmail


def test_bootstrap_binds_the_root_and_configuration(app: Container, repo_root: Path) -> None:
    assert app.make("root") == repo_root
    assert app.make(Configuration).root == repo_root


def test_a_class_job_pushed_through_the_app_gets_the_apps_outbox(
    app: Container, outbox_path: Path
) -> None:
    app.make(Queue).driver("sync").push(SendWelcomeEmail, args=["ada@example.com"])

    [message] = app.make(Outbox).messages()
    assert message["to"] == "ada@example.com"
    assert message["subject"] == "Welcome!"
    assert message["pid"] == os.getpid()
    assert outbox_path.exists()


def test_each_bootstrap_builds_its_own_container(
    app: Container, repo_root: Path, boot: Callable[..., Container]
) -> None:
    other = boot(repo_root)

    assert other is not app
    assert other.make(Outbox) is not app.make(Outbox)


# A project of one's own ---------------------------------------------------------------


def test_a_directory_without_config_is_refused(
    tmp_path: Path, boot: Callable[..., Container]
) -> None:
    with pytest.raises(ConfigurationError, match=r"config/application\.py"):
        boot(tmp_path)


def test_bootstrap_without_a_root_uses_the_current_directory(
    make_project: Callable[..., Path],
    boot: Callable[..., Container],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = make_project('DRIVER = "sync"\n')
    monkeypatch.delenv("QUEUE_PROJECT_ROOT", raising=False)
    monkeypatch.chdir(root)

    container = boot()

    assert container.make("root") == root.resolve()
    assert container.make(Queue).default == "sync"


def test_bootstrap_without_a_root_uses_queue_project_root(
    make_project: Callable[..., Path],
    boot: Callable[..., Container],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = make_project('DRIVER = "sync"\n')
    monkeypatch.setenv("QUEUE_PROJECT_ROOT", str(root))

    assert boot().make("root") == root.resolve()


def test_the_sync_driver_is_always_available(
    make_project: Callable[..., Path], boot: Callable[..., Container]
) -> None:
    root = make_project('DRIVER = "sync"\nDRIVERS = {"async": {}}\n')

    queue = boot(root).make(Queue)

    assert queue.default == "sync"
    assert sorted(queue.names) == ["async", "sync"]


def test_driver_settings_reach_the_driver(
    make_project: Callable[..., Path], boot: Callable[..., Container]
) -> None:
    root = make_project(
        """
        DRIVER = "async"
        DRIVERS = {"async": {"mode": "threading", "workers": 3, "blocking": True}}
        """
    )

    driver = boot(root).make(Queue).connection()

    assert isinstance(driver, AsyncDriver)
    assert (driver.mode, driver.workers, driver.blocking) == ("threading", 3, True)


def test_without_driver_the_default_is_the_database_driver(
    make_project: Callable[..., Path], boot: Callable[..., Container]
) -> None:
    root = make_project('DRIVERS = {"async": {}}\n')

    with pytest.raises(ConfigurationError) as refused:
        boot(root)

    assert "DRIVER is not set, so the default 'database' is used" in str(refused.value)


def test_a_driver_entry_without_prefetch_gets_the_drivers_documented_default(
    make_project: Callable[..., Path], boot: Callable[..., Container]
) -> None:
    root = make_project('DRIVER = "amqp"\nDRIVERS = {"amqp": {"channel": "mail"}}\n')

    driver = boot(root).make(Queue).connection("amqp")

    assert (
        (driver.prefetch, driver.default_queue) == (DEFAULT_AMQP_PREFETCH, "mail") == (100, "mail")
    )


def test_an_unknown_driver_is_a_configuration_error(
    make_project: Callable[..., Path], boot: Callable[..., Container]
) -> None:
    root = make_project('DRIVER = "sync"\nDRIVERS = {"redis": {"host": "localhost"}}\n')

    with pytest.raises(ConfigurationError) as refused:
        boot(root)

    message = str(refused.value)
    assert "config/queue.py" in message
    assert "'redis'" in message
    assert "async" in message and "database" in message


def test_an_unknown_setting_is_a_configuration_error(
    make_project: Callable[..., Path], boot: Callable[..., Container]
) -> None:
    root = make_project(
        'DRIVER = "async"\nDRIVERS = {"async": {"mode": "threading", "wrkers": 4}}\n'
    )

    with pytest.raises(ConfigurationError) as refused:
        boot(root)

    message = str(refused.value)
    assert "DRIVERS['async']" in message
    assert "wrkers" in message
    assert "workers" in message  # the known settings are listed


def test_a_default_driver_that_is_not_configured_is_a_configuration_error(
    make_project: Callable[..., Path], boot: Callable[..., Container]
) -> None:
    root = make_project('DRIVER = "database"\nDRIVERS = {"async": {}}\n')

    with pytest.raises(ConfigurationError) as refused:
        boot(root)

    message = str(refused.value)
    assert "DRIVER is 'database'" in message
    assert "async, sync" in message


def test_drivers_that_is_not_a_dict_is_a_configuration_error(
    make_project: Callable[..., Path], boot: Callable[..., Container]
) -> None:
    root = make_project('DRIVERS = ["async"]\n')

    with pytest.raises(ConfigurationError, match="DRIVERS must be a dict"):
        boot(root)


def test_a_config_file_that_raises_is_a_configuration_error(
    make_project: Callable[..., Path], boot: Callable[..., Container]
) -> None:
    root = make_project("DRIVER = undefined_name\n")

    with pytest.raises(ConfigurationError, match=r"config/queue.py failed to load.*undefined_name"):
        boot(root)


def test_the_database_driver_without_database_provider_says_what_is_missing(
    make_project: Callable[..., Path], boot: Callable[..., Container]
) -> None:
    root = make_project('DRIVER = "sync"\nDRIVERS = {"database": {}}\n')
    queue = boot(root).make(Queue)

    with pytest.raises((ConfigurationError, ResolutionError), match="needs DatabaseProvider"):
        queue.driver("database").push(print)


def test_a_provider_list_entry_that_is_not_a_provider_is_refused(
    make_project: Callable[..., Path], boot: Callable[..., Container]
) -> None:
    root = make_project(application="PROVIDERS = [object]\n")

    with pytest.raises(ConfigurationError, match="not a ServiceProvider"):
        boot(root)


def test_every_provider_registers_before_any_boots(
    make_project: Callable[..., Path], boot: Callable[..., Container]
) -> None:
    root = make_project(
        application="""
        from providers import ServiceProvider

        class First(ServiceProvider):
            def register(self):
                self.container.instance("events", [])

            def boot(self):
                events = self.container.make("events")
                events.append(("first booted; second registered", self.container.has("second")))

        class Second(ServiceProvider):
            def register(self):
                self.container.make("events").append(("second registered", True))
                self.container.instance("second", True)

        PROVIDERS = [First, Second]
        """
    )

    events = boot(root).make("events")

    assert events == [("second registered", True), ("first booted; second registered", True)]


def test_the_key_can_come_from_the_projects_dotenv(
    make_project: Callable[..., Path],
    boot: Callable[..., Container],
    unset_env: Callable[[str], None],
) -> None:
    key = secrets.token_hex(24)
    root = make_project('DRIVER = "sync"\n', dotenv=f"APP_KEY={key}\n")
    unset_env("APP_KEY")

    container = boot(root)

    body = signed_body(container.make(Queue), print)
    assert Signer(key).load(body)["obj"] is print


ROTATED_APPLICATION = """
from providers import QueueProvider
from providers.environment import env, env_list

KEY = env("APP_KEY", None, cast=False)
PREVIOUS_KEYS = env_list("APP_PREVIOUS_KEYS")
PROVIDERS = [QueueProvider]
"""


def test_jobs_signed_with_a_key_in_app_previous_keys_load_and_new_ones_use_app_key(
    make_project: Callable[..., Path],
    boot: Callable[..., Container],
    app_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    older, old = secrets.token_hex(24), secrets.token_hex(24)
    monkeypatch.setenv("APP_PREVIOUS_KEYS", f"{old},{older}")
    root = make_project('DRIVER = "sync"\n', application=ROTATED_APPLICATION)

    signer = boot(root).make(Signer)

    for key in (old, older):
        assert signer.load(Signer(key).dump(JOB_FOR_PRINT))["obj"] is print
    assert Signer(app_key).load(signer.dump(JOB_FOR_PRINT))["obj"] is print


def test_the_repositorys_config_reads_app_previous_keys(
    app_environment: dict[str, Any],
    repo_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    boot: Callable[..., Container],
) -> None:
    old = secrets.token_hex(24)
    monkeypatch.setenv("APP_PREVIOUS_KEYS", old)

    signer = boot(repo_root).make(Signer)

    assert signer.load(Signer(old).dump(JOB_FOR_PRINT))["obj"] is print


def test_previous_keys_given_as_one_string_in_config_are_a_clear_error(
    make_project: Callable[..., Path], boot: Callable[..., Container]
) -> None:
    application = APPLICATION + 'PREVIOUS_KEYS = "base64:QUJDREVGR0hJSktMTU5PUA=="\n'
    root = make_project('DRIVER = "sync"\n', application=application)

    with pytest.raises(ConfigurationError) as refused:
        boot(root)

    assert str(refused.value) == (
        "config/application.py: PREVIOUS_KEYS must be a list of keys "
        "(APP_PREVIOUS_KEYS holds them comma-separated)"
    )


def test_the_environment_wins_over_the_projects_dotenv(
    make_project: Callable[..., Path],
    boot: Callable[..., Container],
    app_key: str,
) -> None:
    root = make_project('DRIVER = "sync"\n', dotenv=f"APP_KEY={secrets.token_hex(24)}\n")

    container = boot(root)

    body = signed_body(container.make(Queue), print)
    assert Signer(app_key).load(body)["obj"] is print
