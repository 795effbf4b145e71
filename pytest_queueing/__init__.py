"""A pytest plugin for applications built on this toolkit: the `app` fixture.

Installed with the package (a `pytest11` entry point), so an application's
own tests can ask for `app` with no conftest.py:

    def test_signup_sends_the_welcome_email(app):
        with fake_queue(app) as fake:
            ...

A `conftest.py` that defines its own `app` fixture wins over this one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from container import Container


@pytest.fixture
def app(request: pytest.FixtureRequest) -> Iterator[Container]:
    """The application's container, bootstrapped as `craft` does, closed after the test.

    The project root is the nearest folder holding `config/application.py`,
    from pytest's rootdir upwards (or `$QUEUE_PROJECT_ROOT`).
    """
    # Imported here, so that loading the plugin costs pytest nothing.
    from providers import ConfigurationError, bootstrap, find_project_root
    from queueing import Queue
    from queueing.connections import Connections

    root = find_project_root(request.config.rootpath)
    if root is None:
        raise ConfigurationError(
            f"the app fixture found no config/application.py in {request.config.rootpath} "
            "or any folder above it"
        )
    container = bootstrap(root)
    yield container
    container.make(Queue).close()
    if container.has(Connections):
        container.make(Connections).close()
