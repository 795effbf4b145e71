"""The one bootstrap: project root -> configuration -> providers -> a ready container.

`craft`, the worker, tests and the async driver's child processes all start
the application through `bootstrap()`, so each process builds its container
the same way from the same providers.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from container import Container
from providers.configuration import Configuration, ConfigurationError
from providers.environment import load_environment
from providers.provider import ServiceProvider

ROOT_VARIABLE = "QUEUE_PROJECT_ROOT"


def project_root(root: str | Path | None = None) -> Path:
    """Return the project root: `root`, else `$QUEUE_PROJECT_ROOT`, else the current directory."""
    return Path(root or os.environ.get(ROOT_VARIABLE) or Path.cwd()).resolve()


def find_project_root(start: str | Path | None = None) -> Path | None:
    """Return the nearest folder holding `config/application.py`, from `start` upwards.

    `start` defaults to the current directory; `$QUEUE_PROJECT_ROOT`, when
    set, wins over both. None when no folder up to the filesystem root has it.
    """
    if os.environ.get(ROOT_VARIABLE):
        return project_root()
    folder = Path(start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / "config" / "application.py").is_file():
            return candidate
    return None


def bootstrap(root: str | Path | None = None) -> Container:
    """Build the application's container from the project at `root`.

    Reads `.env`, puts the root on `sys.path` (so `app.*` imports and job
    classes unpickle), loads `config/application.py`, then registers and
    boots each class in its `PROVIDERS`.
    """
    root = project_root(root)
    if not (root / "config" / "application.py").is_file():
        raise ConfigurationError(
            f"{root} has no config/application.py: run this from the project root "
            f"(or set {ROOT_VARIABLE})"
        )
    load_environment(root)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))

    configuration = Configuration(root)
    container = Container()
    container.instance(Configuration, configuration)
    container.instance("root", root)
    # Child processes (async multiprocess mode) rebuild the container with this.
    container.instance("container.factory", functools.partial(bootstrap, root))

    providers = []
    for provider_class in configuration.get("application", "PROVIDERS", []):
        if not (isinstance(provider_class, type) and issubclass(provider_class, ServiceProvider)):
            raise ConfigurationError(
                f"config/application.py PROVIDERS lists {provider_class!r}, "
                "which is not a ServiceProvider class"
            )
        providers.append(provider_class(container))
    for provider in providers:
        provider.register()
    for provider in providers:
        provider.boot()
    return container
