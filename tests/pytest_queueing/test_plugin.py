"""The `app` fixture the package installs for applications' own tests.

Each test runs pytest as a user would, in a copy of the application outside
this repository, with nothing but the installed package to give it `app`.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

from tests.database_fixtures import ROOT, make_project, new_key, project_env

README = (ROOT / "README.md").read_text()


def readme_block(heading: str) -> str:
    """The first python code block under the README section `heading`."""
    section = README.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    [block, *_] = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    return block


def run_pytest(project: Path, key: str) -> subprocess.CompletedProcess[str]:
    """Run pytest in `project` as its developer would, this repository out of sight."""
    environment = project_env(project, key)
    # The package is installed (editable); the repository root must not be on the path.
    environment.pop("PYTHONPATH", None)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_readme_testing_snippet_passes_in_a_project_with_no_conftest(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    (project / "tests").mkdir()
    (project / "tests" / "test_signup.py").write_text(readme_block("Testing your code"))
    key = new_key()
    migrated = subprocess.run(
        [str(Path(sys.executable).with_name("craft")), "migrate"],
        cwd=project,
        env=project_env(project, key),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert migrated.returncode == 0, migrated.stderr

    ran = run_pytest(project, key)

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "1 passed" in ran.stdout
    [message] = (project / "storage" / "outbox.jsonl").read_text().splitlines()
    assert '"to": "ada@example.com"' in message


def test_the_app_fixture_finds_the_project_from_a_test_subfolder(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    tests = project / "tests" / "unit"
    tests.mkdir(parents=True)
    (tests / "test_root.py").write_text(
        f"def test_root(app):\n    assert str(app.make('root')) == {str(project.resolve())!r}\n"
    )

    ran = run_pytest(project, new_key())

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "1 passed" in ran.stdout


def test_the_readme_pushing_examples_name_only_things_the_project_ships() -> None:
    block = readme_block("Pushing")
    shipped = {
        "SendWelcomeEmail": "app.jobs.SendWelcomeEmail",
        "ResizeImage": "app.jobs.ResizeImage",
        "Outbox": "app.services.outbox",
        "notify_slack": "app.examples",
        "Path": "pathlib",
    }
    tree = ast.parse(block)
    named = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)} - {"queue", "print"}

    assert named <= set(shipped), f"the README pushes things nobody ships: {named - set(shipped)}"
    for name in named:
        assert hasattr(importlib.import_module(shipped[name]), name), name
    job = importlib.import_module("app.jobs.SendWelcomeEmail").SendWelcomeEmail
    for call in ast.walk(tree):
        for keyword in getattr(call, "keywords", []):
            if keyword.arg == "callback":
                assert callable(getattr(job, ast.literal_eval(keyword.value), None))
