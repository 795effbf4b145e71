"""The operator's `craft queue:*` commands, run as processes in a temporary project.

The tables live in a SQLite file (and, for status and failed, on PostgreSQL
and MariaDB too); this process fills them through the library, then each
test reads what `craft` prints and what is left in the tables.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from queueing import Signer
from queueing.worker import Worker, WorkerOptions
from tests.database_fixtures import (
    Backend,
    backend_env,
    craft,
    insert_row,
    make_project,
    new_key,
    open_backend,
    project_env,
)
from tests.queueing.drivers import jobs_for_database as jobs

JOB = "tests.queueing.drivers.jobs_for_database.FailWhileBroken"
LINE_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  ")


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    """Empty `queue_jobs` and `failed_jobs` in a SQLite file."""
    with open_backend("sqlite", tmp_path) as backend:
        yield backend


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the application to run `craft` in."""
    return make_project(tmp_path)


@pytest.fixture
def markers_dir(tmp_path: Path) -> Path:
    """Where the jobs leave their markers; `broken` in it makes FailWhileBroken fail."""
    path = tmp_path / "markers"
    path.mkdir()
    (path / "broken").touch()
    return path


class Craft:
    """Runs `craft` in the project, against the backend's tables."""

    def __init__(self, project: Path, environment: dict[str, str]) -> None:
        self.project = project
        self.environment = environment

    def __call__(
        self, *arguments: str, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return craft(self.project, self.environment, *arguments, input=input)

    def ok(self, *arguments: str, input: str | None = None) -> str:
        """Run a command that must succeed; return its stdout."""
        result = self(*arguments, input=input)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def json(self, *arguments: str) -> object:
        """Run a command with --json and parse what it printed."""
        return json.loads(self.ok(*arguments, "--json"))

    def refuses(self, *arguments: str, input: str | None = None) -> str:
        """Run a command that must fail with one line on stderr; return that line."""
        result = self(*arguments, input=input)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("craft: ")
        return lines[0]


@pytest.fixture
def run(project: Path, backend: Backend) -> Craft:
    """`craft` in the project, with the backend's tables and key."""
    return Craft(project, backend_env(project, backend))


def fail(backend: Backend, markers_dir: Path, *queues: str) -> list[str]:
    """Push one FailWhileBroken per queue and let a worker fail them all; return their ids."""
    pushed = []
    for number, queue in enumerate(queues):
        pushed += backend.queue.push(
            jobs.FailWhileBroken, args=[str(markers_dir), f"job-{number}"], queue=queue
        )
    Worker(
        backend.driver,
        backend.runner,
        WorkerOptions(queues=sorted(set(queues)), stop_when_empty=True, sleep=0.01),
        output=lambda _line: None,
        errors=lambda _line: None,
    ).run()
    assert [row.uuid for row in backend.failures()] == pushed
    return pushed


# queue:status -------------------------------------------------------------------------------


def test_status_counts_each_queue_as_text_and_as_json(
    backend: Backend, run: Craft, markers_dir: Path
) -> None:
    fail(backend, markers_dir, "default")
    arguments = [str(markers_dir), "x"]
    backend.queue.push(jobs.Record, jobs.Record, jobs.Record, args=arguments)
    backend.queue.push(jobs.Record, args=arguments, wait="1 hour")
    backend.queue.push(jobs.Record, args=arguments, queue="mail")
    assert backend.driver.reserve(["default"]) is not None

    rows = run.json("queue:status")
    text = run.ok("queue:status").splitlines()

    for row in rows:
        assert isinstance(row.pop("oldest_pending_seconds"), float)
    assert rows == [
        {
            "driver": "database",
            "connection": "sqlite",
            "queue": "default",
            "pending": 2,
            "delayed": 1,
            "reserved": 1,
            "failed": 1,
        },
        {
            "driver": "database",
            "connection": "sqlite",
            "queue": "mail",
            "pending": 1,
            "delayed": 0,
            "reserved": 0,
            "failed": 0,
        },
    ]
    assert text[0].split() == [
        "connection",
        "queue",
        "pending",
        "delayed",
        "reserved",
        "failed",
        "oldest",
        "pending",
    ]
    assert text[1].split()[:6] == ["sqlite", "default", "2", "1", "1", "1"]
    assert text[2].split()[:6] == ["sqlite", "mail", "1", "0", "0", "0"]
    assert len(text) == 3


def test_status_of_empty_queues_says_so(run: Craft) -> None:
    assert run.ok("queue:status") == "no jobs on database\n"
    assert run.json("queue:status") == []


# queue:failed -------------------------------------------------------------------------------


def test_failed_lists_the_failures_as_a_table_and_as_json(
    backend: Backend, run: Craft, markers_dir: Path
) -> None:
    ids = fail(backend, markers_dir, "default", "reports")

    listed = run.json("queue:failed")
    table = run.ok("queue:failed").splitlines()

    assert [(entry["uuid"], entry["queue"]) for entry in listed] == [
        (ids[0], "default"),
        (ids[1], "reports"),
    ]
    first = listed[0]
    assert (first["job"], first["driver"], first["connection"], first["reason"]) == (
        JOB,
        "database",
        "sqlite",
        "failed",
    )
    assert first["exception"] == "RuntimeError: job-0: the mail server is down"
    assert first["attempts"] == 1
    assert table[0].split() == [
        "id",
        "job",
        "queue",
        "driver",
        "exception",
        "failed",
        "at",
        "(UTC)",
    ]
    assert table[1].split()[:4] == [str(first["id"]), "FailWhileBroken", "default", "database"]
    assert "RuntimeError: job-0: the mail server is down" in table[1]
    assert len(table) == 3


def test_failed_filters_by_queue_job_and_since(
    backend: Backend, run: Craft, markers_dir: Path
) -> None:
    fail(backend, markers_dir, "default", "reports")

    def queues(*filters: str) -> list[str]:
        return [entry["queue"] for entry in run.json("queue:failed", *filters)]

    assert queues("--queue", "reports") == ["reports"]
    assert queues("--job", "FailWhileBroken") == ["default", "reports"]
    assert queues("--job", JOB) == ["default", "reports"]
    assert queues("--job", "Record") == []
    assert queues("--since", "1 hour") == ["default", "reports"]
    assert queues("--since", "2999-01-01T00:00:00+00:00") == []
    assert queues("--since", "2000-01-01T00:00:00+00:00") == ["default", "reports"]
    assert queues("--since", "2999-01-01") == []
    assert run.ok("queue:failed", "--queue", "nowhere") == "no failed jobs\n"
    assert "cannot read --since 'last tuesday'" in run.refuses(
        "queue:failed", "--since", "last tuesday"
    )


# queue:retry, queue:work --failed -----------------------------------------------------------


def test_retry_puts_one_failed_job_back_and_a_worker_then_runs_it(
    backend: Backend, run: Craft, markers_dir: Path
) -> None:
    ids = fail(backend, markers_dir, "default", "reports")
    first, second = backend.failures()
    (markers_dir / "broken").unlink()

    out = run.ok("queue:retry", str(first.id))

    assert out == f"retrying {first.id} ({JOB}) on database:default\n"
    assert [row.uuid for row in backend.failures()] == [second.uuid]
    [row] = backend.jobs()
    assert (row.uuid, row.queue, row.attempts) == (ids[0], "default", 0)
    run.ok("queue:work", "--stop-when-empty", "--sleep", "0.05")
    assert jobs.runs_by_name(markers_dir) == {"job-0": 1}
    assert backend.jobs() == []


def test_retry_takes_a_job_uuid_too(backend: Backend, run: Craft, markers_dir: Path) -> None:
    [job_id] = fail(backend, markers_dir, "default")

    run.ok("queue:retry", job_id)

    assert backend.failures() == []
    assert [row.uuid for row in backend.jobs()] == [job_id]


def test_retry_all_puts_every_failed_job_back(
    backend: Backend, run: Craft, markers_dir: Path
) -> None:
    ids = fail(backend, markers_dir, "default", "reports")

    out = run.ok("queue:retry", "--all").splitlines()

    assert len(out) == 2 and all(line.startswith("retrying ") for line in out)
    assert backend.failures() == []
    assert sorted((row.uuid, row.queue) for row in backend.jobs()) == sorted(
        zip(ids, ["default", "reports"], strict=True)
    )
    assert run.ok("queue:retry", "--all") == "no failed jobs to retry\n"


def test_retry_of_an_unknown_id_is_one_line_and_changes_nothing(
    backend: Backend, run: Craft, markers_dir: Path
) -> None:
    fail(backend, markers_dir, "default")

    assert run.refuses("queue:retry", "999") == "craft: no failed job with id '999'"
    assert run.refuses("queue:retry") == "craft: name the failed job ids to retry, or pass --all"
    assert len(backend.failures()) == 1
    assert backend.jobs() == []


def test_work_failed_requeues_every_failed_job_and_leaves_refused_payloads(
    backend: Backend, run: Craft, markers_dir: Path
) -> None:
    ids = fail(backend, markers_dir, "default", "reports")
    forged = Signer(new_key()).dump({"obj": jobs.Forged(str(markers_dir))})
    insert_row(backend.engine, forged, available_at=0, name="app.jobs.Innocent")
    held = backend.driver.reserve(["default"])
    assert held is not None
    backend.runner.run(held.envelope)
    backend.driver.bury(held)
    assert [row.reason for row in backend.failures()] == ["failed", "failed", "signature"]

    out = run.ok("queue:work", "--failed")

    assert out == "put 2 failed job(s) back on their queues\n"
    assert sorted(row.uuid for row in backend.jobs()) == sorted(ids)
    assert [row.reason for row in backend.failures()] == ["signature"]
    assert jobs.markers(markers_dir, "forged", "unpickled") == []


# queue:forget, queue:flush, queue:clear -----------------------------------------------------


def test_forget_deletes_one_failed_job(backend: Backend, run: Craft, markers_dir: Path) -> None:
    fail(backend, markers_dir, "default", "reports")
    first, second = backend.failures()

    assert run.ok("queue:forget", str(first.id)) == f"forgot failed job {first.id}\n"

    assert [row.id for row in backend.failures()] == [second.id]
    assert backend.jobs() == []


def test_forget_of_an_unknown_id_is_one_line(
    backend: Backend, run: Craft, markers_dir: Path
) -> None:
    fail(backend, markers_dir, "default")

    assert run.refuses("queue:forget", "999") == "craft: no failed job with id '999'"
    assert len(backend.failures()) == 1


def test_flush_deletes_every_failed_job(backend: Backend, run: Craft, markers_dir: Path) -> None:
    fail(backend, markers_dir, "default", "reports")

    assert run.ok("queue:flush") == "deleted 2 failed job(s)\n"

    assert backend.failures() == []
    assert run.json("queue:flush") == {"deleted": 0}


def test_clear_deletes_nothing_without_force_or_an_answer(
    backend: Backend, run: Craft, markers_dir: Path
) -> None:
    backend.queue.push(jobs.Record, jobs.Record, args=[str(markers_dir), "x"])

    run.refuses("queue:clear")
    assert run.refuses("queue:clear", input="n\n") == "craft: nothing deleted"

    assert len(backend.jobs()) == 2


def test_clear_with_force_deletes_the_pending_jobs(
    backend: Backend, run: Craft, markers_dir: Path
) -> None:
    arguments = [str(markers_dir), "x"]
    backend.queue.push(jobs.Record, jobs.Record, args=arguments)
    backend.queue.push(jobs.Record, args=arguments, queue="mail")

    assert run.ok("queue:clear", "--queue", "mail", "--force") == "deleted 1 pending job(s)\n"
    assert {row.queue for row in backend.jobs()} == {"default"}
    assert run.ok("queue:clear", "--force") == "deleted 2 pending job(s)\n"
    assert backend.jobs() == []


def test_clear_goes_ahead_when_the_operator_says_yes(
    backend: Backend, run: Craft, markers_dir: Path
) -> None:
    backend.queue.push(jobs.Record, args=[str(markers_dir), "x"])

    assert run.ok("queue:clear", input="y\n").endswith("deleted 1 pending job(s)\n")
    assert backend.jobs() == []


# Missing tables, missing key ----------------------------------------------------------------


def test_missing_tables_with_their_migrations_written_say_to_run_craft_migrate(
    project: Path, tmp_path: Path
) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    run = Craft(project, project_env(project, new_key(), DB_SQLITE_URL=empty))
    jobs_missing = (
        "craft: table queue_jobs does not exist on connection 'sqlite': run craft migrate"
    )
    failed_missing = (
        "craft: table failed_jobs does not exist on connection 'sqlite': run craft migrate"
    )

    assert run.refuses("queue:work", "--stop-when-empty") == jobs_missing
    assert run.refuses("queue:status") == jobs_missing
    assert run.refuses("queue:failed") == failed_missing
    assert run.refuses("queue:retry", "--all") == failed_missing


def test_missing_tables_without_their_migrations_say_to_write_them_first(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path, migrations=False)
    empty = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    run = Craft(project, project_env(project, new_key(), DB_SQLITE_URL=empty))

    assert run.refuses("queue:work", "--stop-when-empty") == (
        "craft: table queue_jobs does not exist on connection 'sqlite': "
        "run craft queue:table --jobs, then craft migrate"
    )
    assert run.refuses("queue:failed") == (
        "craft: table failed_jobs does not exist on connection 'sqlite': "
        "run craft queue:table --failed, then craft migrate"
    )
    run.ok("queue:table", "--jobs")
    run.ok("migrate")
    assert run.refuses("queue:failed") == (
        "craft: table failed_jobs does not exist on connection 'sqlite': "
        "run craft queue:table --failed, then craft migrate"
    )
    run.ok("queue:work", "--stop-when-empty")


def test_the_examples_on_a_missing_table_print_one_line_with_the_fix(
    project: Path, tmp_path: Path
) -> None:
    empty = f"sqlite:///{tmp_path / 'empty.sqlite'}"
    environment = project_env(project, new_key(), DB_SQLITE_URL=empty)

    pushed = examples(project, environment)

    assert pushed.returncode == 1
    assert pushed.stdout == ""
    assert pushed.stderr == (
        "app.examples: table queue_jobs does not exist on connection 'sqlite': run craft migrate\n"
    )


def test_the_examples_on_bad_config_print_one_line(project: Path) -> None:
    (project / "config" / "queue.py").write_text("DRIVER = 'nosuch'\nDRIVERS = {}\n")

    pushed = examples(project, project_env(project, new_key()))

    assert pushed.returncode == 1
    [line] = pushed.stderr.splitlines()
    assert line.startswith("app.examples: ")
    assert "nosuch" in line


def examples(project: Path, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `python -m app.examples` in `project`."""
    return subprocess.run(
        [sys.executable, "-m", "app.examples"],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_worker_without_a_key_says_how_to_make_one(project: Path, backend: Backend) -> None:
    environment = backend_env(project, backend)
    del environment["APP_KEY"]

    line = Craft(project, environment).refuses("queue:work", "--stop-when-empty")

    assert "craft key --store" in line


# The same commands on a server --------------------------------------------------------------


@pytest.mark.parametrize("engine", ["postgresql", "mariadb"])
def test_status_and_failed_on_a_database_server(
    engine: str, project: Path, tmp_path: Path, markers_dir: Path
) -> None:
    with open_backend(engine, tmp_path) as backend:
        ids = fail(backend, markers_dir, "default")
        backend.queue.push(jobs.Record, args=[str(markers_dir), "x"])
        run = Craft(project, backend_env(project, backend))

        [status] = run.json("queue:status", "--channel", backend.connection)
        listed = run.json("queue:failed", "--since", "1 hour")
        table = run.ok("queue:failed").splitlines()
        assert run.json("queue:failed", "--since", "2999-01-01T00:00:00+00:00") == []
        run.ok("queue:retry", "--all")

        assert (status["connection"], status["pending"], status["failed"]) == (
            backend.connection,
            1,
            1,
        )
        assert [(entry["uuid"], entry["connection"]) for entry in listed] == [
            (ids[0], backend.connection)
        ]
        assert len(table) == 2 and "FailWhileBroken" in table[1]
        assert backend.failures() == []
        assert len(backend.jobs()) == 2


# The README's main job ----------------------------------------------------------------------


def test_the_readme_main_job_runs_on_sqlite_with_no_server(project: Path) -> None:
    run = Craft(project, project_env(project, None))

    assert run.ok("key", "--store") == "APP_KEY written to .env\n"
    assert run.ok("key", "--store", "--if-missing") == "APP_KEY already set in .env; kept it\n"
    run.ok("migrate")
    pushed = subprocess.run(
        [sys.executable, "-m", "app.examples"],
        cwd=project,
        env=run.environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.startswith("pushed 4 jobs to the database driver")
    worked = run.ok("queue:work", "--stop-when-empty", "--sleep", "0.05").splitlines()
    [status] = run.json("queue:status")
    [failure] = run.json("queue:failed")

    # A job line: time, job, id, queue, outcome, duration; columns two spaces or more apart.
    fields = [re.split(r" {2,}", line) for line in worked if LINE_TIME.match(line)]
    outcomes = [[field[1], field[4]] for field in fields if len(field) >= 6]
    assert outcomes.count(["SendWelcomeEmail", "done"]) == 2
    assert ["notify_slack", "done"] in outcomes
    assert [outcome for job, outcome in outcomes if job == "ResizeImage"] == [
        "retry 1/3 in 1 s",
        "retry 2/3 in 1 s",
        "failed 3/3",
    ]
    assert re.search(
        r"worker stopped after .*: 6 processed, 3 done, 1 failed, 2 retried", worked[-1]
    )
    assert (status["pending"], status["delayed"], status["reserved"], status["failed"]) == (
        0,
        0,
        0,
        1,
    )
    assert (failure["job"], failure["attempts"]) == ("app.jobs.ResizeImage.ResizeImage", 3)
    outbox = (project / "storage" / "outbox.jsonl").read_text().splitlines()
    assert len(outbox) == 3  # two welcome emails and the developers' failure notice
