"""`craft` itself: where it runs from, its version, its help and how it reports errors."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest

from tests.database_fixtures import ROOT, craft, make_project, new_key, project_env


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the application, its tables made by `craft migrate`."""
    project = make_project(tmp_path)
    ran = craft(project, project_env(project, new_key()), "migrate")
    assert ran.returncode == 0, ran.stderr
    return project


def test_craft_version_prints_the_installed_package_version(tmp_path: Path) -> None:
    ran = craft(tmp_path, project_env(tmp_path, None), "--version")

    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == f"craft {importlib.metadata.version('queueing-toolkit')}\n"


def test_craft_finds_the_project_root_from_a_subfolder(project: Path) -> None:
    environment = project_env(project, new_key())
    subfolder = project / "app" / "jobs"

    made = craft(subfolder, environment, "job", "ShipOrder")
    status = craft(subfolder, environment, "queue:status")

    assert made.returncode == 0, made.stderr
    assert made.stdout == "created app/jobs/ShipOrder.py\n"
    assert (project / "app" / "jobs" / "ShipOrder.py").is_file()
    assert not (subfolder / "app").exists()
    assert (status.returncode, status.stdout) == (0, "no jobs on database\n"), status.stderr


def test_craft_outside_any_project_says_so_in_one_line(tmp_path: Path) -> None:
    ran = craft(tmp_path, project_env(tmp_path, new_key()), "queue:status")

    assert ran.returncode == 1
    [line] = ran.stderr.splitlines()
    assert line.startswith(f"craft: {tmp_path.resolve()} has no config/application.py")


def test_an_unknown_connection_is_reported_without_a_class_name(project: Path) -> None:
    environment = project_env(project, new_key())

    ran = craft(project, environment, "queue:work", "--channel", "nosuch", "--stop-when-empty")

    assert ran.returncode == 1
    [line] = ran.stderr.splitlines()
    assert line.startswith("craft: no database connection named 'nosuch'")


@pytest.mark.parametrize("option", ["--timeout", "--max-time", "--sleep", "--grace"])
def test_a_duration_option_that_is_not_a_number_says_it_must_be_seconds(
    project: Path, option: str
) -> None:
    ran = craft(project, project_env(project, new_key()), "queue:work", option, "abc")

    assert ran.returncode == 2
    [line] = ran.stderr.splitlines()
    assert line.startswith("craft: ")
    assert "'abc' must be a number of seconds" in line


def test_a_timeout_of_zero_says_it_must_be_above_zero(project: Path) -> None:
    ran = craft(project, project_env(project, new_key()), "queue:work", "--timeout", "0")

    assert ran.returncode == 2
    assert "'0' must be a number of seconds, above 0" in ran.stderr


def test_stop_when_empty_help_says_what_the_readme_says(tmp_path: Path) -> None:
    ran = craft(tmp_path, project_env(tmp_path, None), "queue:work", "--help")
    readme = " ".join((ROOT / "README.md").read_text().split())

    [described] = re.findall(r"`--stop-when-empty` exits ([^.]+)\.", readme)
    help_text = " ".join(ran.stdout.split())
    assert f"--stop-when-empty Exit {described}." in help_text
