"""`env()` and `env_list()`: read a setting from the environment or the project's `.env` file."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from dotenv import load_dotenv

_loaded: set[Path] = set()
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def load_environment(root: Path) -> None:
    """Load `root/.env` into the environment once; variables already set win."""
    path = (root / ".env").resolve()
    if path not in _loaded:
        _loaded.add(path)
        if path.is_file():
            load_dotenv(path, override=False)


def env(name: str, default: Any = None, cast: bool = True) -> Any:
    """Return the variable `name`, or `default` when it is unset.

    The project's `.env` (in the current directory) is read first, without
    overriding variables already set. With `cast`, "true"/"false" become
    booleans, "none"/"null" become None and numbers become int or float.
    """
    load_environment(Path.cwd())
    value = os.environ.get(name)
    if value is None:
        return default
    return _cast(value) if cast else value


def env_list(name: str) -> list[str]:
    """Return the variable `name` read as a comma-separated list (empty when unset).

    Items are stripped and empty items dropped, so `"a, b,"` is `["a", "b"]`.
    Values are not cast.
    """
    return comma_separated(env(name, "", cast=False))


def comma_separated(text: str) -> list[str]:
    """Split `text` at commas into its stripped, non-empty items."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _cast(value: str) -> Any:
    lowered = value.strip().lower()
    if lowered in {"true", "yes", "on"}:
        return True
    if lowered in {"false", "no", "off"}:
        return False
    if lowered in {"none", "null"}:
        return None
    if _NUMBER.match(lowered):
        return float(lowered) if "." in lowered else int(lowered)
    return value
