"""Reading the project's `config/*.py` files."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any


class ConfigurationError(Exception):
    """The project's configuration is missing or says something that cannot work."""


class Configuration:
    """The configuration files of one project, read from `root/config/`.

    Each file is loaded once, by path, so two projects in one process (tests)
    never see each other's settings.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._modules: dict[str, ModuleType] = {}

    def module(self, name: str) -> ModuleType:
        """Return `config/<name>.py` as a module (raises `ConfigurationError`)."""
        if name not in self._modules:
            path = self.root / "config" / f"{name}.py"
            if not path.is_file():
                raise ConfigurationError(f"config/{name}.py not found in {self.root}")
            spec = importlib.util.spec_from_file_location(f"config.{name}", path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
            except Exception as error:
                raise ConfigurationError(
                    f"config/{name}.py failed to load: {type(error).__name__}: {error}"
                ) from error
            self._modules[name] = module
        return self._modules[name]

    def get(self, name: str, setting: str, default: Any = None) -> Any:
        """Return `setting` from `config/<name>.py`, or `default` when it is not set."""
        return getattr(self.module(name), setting, default)
