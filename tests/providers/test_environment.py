"""`env()` and `env_list()`: settings from the environment and `.env`, as config files need."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from providers import env
from providers.environment import env_list

NAME = "QUEUE_TEST_SETTING"


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("False", False),
        ("no", False),
        ("off", False),
        ("none", None),
        ("None", None),
        ("null", None),
        ("42", 42),
        ("-3", -3),
        ("0", 0),
        ("1.5", 1.5),
        ("-0.25", -0.25),
        ("redis://localhost", "redis://localhost"),
        ("1.2.3", "1.2.3"),
        ("", ""),
    ],
)
def test_env_casts_the_value(raw: str, value: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, raw)

    result = env(NAME)

    assert result == value
    assert type(result) is type(value)


def test_env_without_cast_returns_the_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, "42")

    assert env(NAME, cast=False) == "42"


def test_an_unset_variable_gives_the_default(unset_env: Callable[[str], None]) -> None:
    unset_env(NAME)

    assert env(NAME) is None
    assert env(NAME, 4) == 4
    assert env(NAME, "true") == "true"  # a default is returned as given


@pytest.fixture
def project_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unset_env: Callable[[str], None]
) -> Path:
    """The current directory, holding a `.env`; the variables it sets are removed after."""
    for name in ("QUEUE_TEST_DOTENV_ONLY", "QUEUE_TEST_IN_BOTH", "QUEUE_TEST_DOTENV_FLAG"):
        unset_env(name)
    (tmp_path / ".env").write_text(
        "QUEUE_TEST_DOTENV_ONLY=from-dotenv\n"
        "QUEUE_TEST_IN_BOTH=from-dotenv\n"
        "QUEUE_TEST_DOTENV_FLAG=true\n"
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_env_reads_the_dotenv_of_the_current_directory(project_dir: Path) -> None:
    assert env("QUEUE_TEST_DOTENV_ONLY") == "from-dotenv"


def test_the_environment_wins_over_dotenv(
    project_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUEUE_TEST_IN_BOTH", "from-environment")

    assert env("QUEUE_TEST_IN_BOTH") == "from-environment"
    assert env("QUEUE_TEST_DOTENV_ONLY") == "from-dotenv"  # the .env was read


def test_values_from_dotenv_are_cast_too(project_dir: Path) -> None:
    assert env("QUEUE_TEST_DOTENV_FLAG") is True


@pytest.mark.parametrize(
    ("raw", "items"),
    [
        ("base64:QUJD,base64:REVG", ["base64:QUJD", "base64:REVG"]),
        (" base64:QUJD , base64:REVG ,", ["base64:QUJD", "base64:REVG"]),
        ("only-one", ["only-one"]),
        ("", []),
        (" , ", []),
    ],
)
def test_env_list_splits_at_commas_and_drops_empty_items(
    raw: str, items: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NAME, raw)

    assert env_list(NAME) == items


def test_env_list_of_an_unset_variable_is_empty(unset_env: Callable[[str], None]) -> None:
    unset_env(NAME)

    assert env_list(NAME) == []


def test_env_list_does_not_cast_its_items(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, "42,true,none")

    assert env_list(NAME) == ["42", "true", "none"]
