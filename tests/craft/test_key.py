"""`craft key`: making, storing and rotating the application key, run as processes.

The rotation tests go through what a user does: `craft key --store`, push, `craft key
--rotate`, then a `craft queue:work` that reads both keys from `.env` (the
process environment holds no key) and runs what was pushed before.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dotenv import dotenv_values

from queueing import Queue, Signer
from tests.database_fixtures import (
    Backend,
    backend_env,
    craft,
    insert_row,
    make_project,
    new_key,
    open_backend,
)
from tests.queueing.drivers import jobs_for_database as jobs

ROTATED = (
    "APP_KEY rotated in .env; APP_PREVIOUS_KEYS now holds {count} key(s), "
    "the old one first, to verify jobs signed before\n"
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the application to run `craft` in."""
    return make_project(tmp_path)


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    """Empty `queue_jobs` and `failed_jobs` in a SQLite file."""
    with open_backend("sqlite", tmp_path) as backend:
        yield backend


@pytest.fixture
def environment(project: Path, backend: Backend) -> dict[str, str]:
    """The environment of `craft` in the project: the backend's tables, no key (.env has it)."""
    environment = backend_env(project, backend)
    del environment["APP_KEY"]
    return environment


@pytest.fixture
def markers_dir(tmp_path: Path) -> Path:
    """Where the jobs leave their markers."""
    path = tmp_path / "markers"
    path.mkdir()
    return path


def run(project: Path, environment: dict[str, str], *arguments: str) -> str:
    """Run a `craft` command that must succeed and print nothing on stderr; return stdout."""
    result = craft(project, environment, *arguments)
    assert (result.returncode, result.stderr) == (0, "")
    return result.stdout


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused command printed on stderr."""
    assert result.returncode != 0
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    return line


def dotenv(project: Path) -> dict[str, str | None]:
    """What the project's `.env` holds."""
    return dotenv_values(project / ".env")


def push_with(backend: Backend, key: str, *jobs_and_arguments: tuple[type, list[str]]) -> None:
    """Push jobs onto the backend's database queue, signed with `key`."""
    queue = Queue({"database": lambda: backend.driver}, "database", Signer(key))
    for job, arguments in jobs_and_arguments:
        queue.push(job, args=arguments)


# The flags that were there before --rotate ---------------------------------------------------


def test_key_prints_a_new_base64_key_and_writes_no_file(
    project: Path, environment: dict[str, str]
) -> None:
    first = run(project, environment, "key").strip()
    second = run(project, environment, "key").strip()

    assert first.startswith("base64:") and len(base64.b64decode(first[7:])) == 32
    assert first != second
    assert not (project / ".env").exists()


def test_store_writes_app_key_once_and_names_rotate_when_refusing_to_replace_it(
    project: Path, environment: dict[str, str]
) -> None:
    assert run(project, environment, "key", "--store") == "APP_KEY written to .env\n"
    stored = dotenv(project)["APP_KEY"]

    refused = refusal(craft(project, environment, "key", "--store"))
    kept = run(project, environment, "key", "--store", "--if-missing")

    assert refused.startswith("craft: APP_KEY is already set in .env; refusing to replace it")
    assert "--rotate replaces it and keeps the old one" in refused
    assert kept == "APP_KEY already set in .env; kept it\n"
    assert dotenv(project)["APP_KEY"] == stored


def test_store_force_replaces_app_key_without_keeping_the_old_one(
    project: Path, environment: dict[str, str]
) -> None:
    run(project, environment, "key", "--store")
    old = dotenv(project)["APP_KEY"]

    run(project, environment, "key", "--store", "--force")

    assert dotenv(project)["APP_KEY"] not in (None, old)
    assert "APP_PREVIOUS_KEYS" not in dotenv(project)


# --rotate ------------------------------------------------------------------------------------


def test_rotate_writes_a_new_key_and_puts_the_old_one_first_in_previous_keys(
    project: Path, environment: dict[str, str]
) -> None:
    older = new_key()
    old = new_key()
    (project / ".env").write_text(f"APP_NAME=demo\nAPP_KEY={old}\nAPP_PREVIOUS_KEYS={older}\n")

    out = run(project, environment, "key", "--rotate")

    values = dotenv(project)
    new = values["APP_KEY"]
    assert out == ROTATED.format(count=2)
    assert new is not None and new.startswith("base64:") and new not in (old, older)
    assert values["APP_PREVIOUS_KEYS"] == f"{old},{older}"
    assert values["APP_NAME"] == "demo"


def test_rotating_again_keeps_every_earlier_key_newest_first(
    project: Path, environment: dict[str, str]
) -> None:
    run(project, environment, "key", "--store")
    seen = [dotenv(project)["APP_KEY"]]

    outputs = []
    for _ in range(3):
        outputs.append(run(project, environment, "key", "--rotate"))
        seen.append(dotenv(project)["APP_KEY"])

    # No cap: an operator removes a previous key once nothing signed with it is left.
    assert outputs == [ROTATED.format(count=count) for count in (1, 2, 3)]
    assert dotenv(project)["APP_PREVIOUS_KEYS"] == ",".join(reversed(seen[:-1]))
    assert len(set(seen)) == 4


def test_rotate_without_a_key_refuses_in_one_line_and_writes_nothing(
    project: Path, environment: dict[str, str]
) -> None:
    no_file = refusal(craft(project, environment, "key", "--rotate"))
    assert not (project / ".env").exists()
    (project / ".env").write_text("APP_NAME=demo\n")
    no_key = refusal(craft(project, environment, "key", "--rotate"))

    expected = "craft: no APP_KEY in .env to rotate: run `craft key --store` to make one"
    assert no_file == no_key == expected
    assert (project / ".env").read_text() == "APP_NAME=demo\n"


def test_rotate_refuses_to_keep_an_unusable_key(project: Path, environment: dict[str, str]) -> None:
    (project / ".env").write_text("APP_KEY=tiny-secret\n")

    line = refusal(craft(project, environment, "key", "--rotate"))

    assert line == (
        "craft: APP_KEY in .env is too short (11 bytes, at least 16 needed), so it is not "
        "worth keeping: replace it with `craft key --store --force`"
    )
    assert (project / ".env").read_text() == "APP_KEY=tiny-secret\n"


def test_rotate_cannot_be_combined_with_force(project: Path, environment: dict[str, str]) -> None:
    run(project, environment, "key", "--store")
    before = (project / ".env").read_text()

    line = refusal(craft(project, environment, "key", "--rotate", "--force"))

    assert line == (
        "craft: --rotate keeps the old key; it cannot be combined with --force or --if-missing"
    )
    assert (project / ".env").read_text() == before


def test_rotate_warns_when_the_environment_overrides_the_key_in_dotenv(
    project: Path, environment: dict[str, str]
) -> None:
    run(project, environment, "key", "--store")

    result = craft(project, {**environment, "APP_KEY": new_key()}, "key", "--rotate")

    assert (result.returncode, result.stdout) == (0, ROTATED.format(count=1))
    assert result.stderr == (
        "craft: warning: APP_KEY is also set in the environment, which wins over .env\n"
    )


# Jobs across a rotation ----------------------------------------------------------------------


def test_a_job_pushed_before_a_rotation_is_run_by_a_worker_after_it(
    project: Path, environment: dict[str, str], backend: Backend, markers_dir: Path
) -> None:
    run(project, environment, "key", "--store")
    key_before = dotenv(project)["APP_KEY"]
    assert key_before is not None
    push_with(backend, key_before, (jobs.Record, [str(markers_dir), "before"]))

    run(project, environment, "key", "--rotate")
    push_with(backend, dotenv(project)["APP_KEY"] or "", (jobs.Record, [str(markers_dir), "after"]))
    worker = craft(project, environment, "queue:work", "--stop-when-empty")

    assert worker.returncode == 0, worker.stderr
    assert len(jobs.markers(markers_dir, "before")) == 1
    assert len(jobs.markers(markers_dir, "after")) == 1
    assert backend.jobs() == [] and backend.failures() == []


def test_after_a_rotation_a_job_signed_by_no_configured_key_is_parked_unloaded_and_told_once(
    project: Path, environment: dict[str, str], backend: Backend, markers_dir: Path
) -> None:
    run(project, environment, "key", "--store")
    run(project, environment, "key", "--rotate")
    # A valid pickle that writes a marker when loaded, signed with a key nobody configured.
    forged = Signer(new_key()).dump({"obj": jobs.Forged(str(markers_dir)), "args": ()})
    insert_row(backend.engine, forged, available_at=0, name="app.jobs.Innocent")
    [row] = backend.jobs()

    worker = craft(project, environment, "queue:work", "--stop-when-empty")

    assert worker.returncode == 0, worker.stderr
    assert jobs.markers(markers_dir, "forged", "unpickled") == []
    assert [failure.reason for failure in backend.failures()] == ["signature"]
    told = [line for line in worker.stderr.splitlines() if row.uuid in line]
    assert told == [
        f"job {row.uuid} parked without loading it, unverified name 'app.jobs.Innocent': "
        "ForgedPayloadError: payload signature matches neither the application key "
        "nor a previous key"
    ]
    assert "Innocent" not in worker.stderr.replace(told[0], "")
    [job_line] = [line for line in worker.stdout.splitlines() if row.uuid[:12] in line]
    assert "unverified name 'app.jobs.Innocent'" in job_line
    assert " parked " in job_line
