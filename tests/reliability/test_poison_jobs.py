"""Jobs that kill their worker are failed after their allowance, and hold back no other job.

A poison job ends the process running it (`os._exit(1)`, as a segfault or
the OOM killer would), so no worker ever reports how its attempt went. The
queue must still count those attempts: after `run_times` deaths the job is
failed and stored with the reason, and the jobs queued behind it run, each
once. A supervisor (`--concurrency`) replaces children that die this way,
and gives up, with one line, on children that cannot even start.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.database_fixtures import WorkerProcess
from tests.reliability import jobs
from tests.reliability.conftest import Target, finish

POISON = "tests.reliability.jobs.KillsItsWorker"
# Times the test starts a worker again after one died.
RESTARTS = 10
# How a supervisor says why a child ended: "exit status 1", "exited with code 1", ...
EXIT_STATUS_ONE = re.compile(r"(status|code|exit(ed)?( with)?)\W*1\b", re.IGNORECASE)
# On amqp the broker's redelivery flag cannot tell the job that was running
# when a worker died from the ones it had only prefetched. A redelivered job
# then runs alone, so its later deaths are certain, and the uncertain one is
# counted once it dies alone (README, "The amqp driver"). So a one-attempt job
# runs twice, and a poison job that sat behind another's first death runs one
# time fewer than run_times.
AMQP_ONE_ATTEMPT_RUNS = 2


def work_until_a_worker_exits_cleanly(target: Target) -> tuple[list[int], WorkerProcess]:
    """Run `--stop-when-empty` workers one after another until one exits by itself.

    After a death the test waits until the jobs the dead worker held are due
    again (a worker started sooner finds nothing due and exits at once), as a
    process manager restarting workers would. Returns every exit status and
    the last worker.
    """
    statuses: list[int] = []
    for _ in range(RESTARTS):
        worker = target.start_worker("--stop-when-empty")
        statuses.append(finish(worker, 30))
        if statuses[-1] == 0:
            break
        target.wait_out_leases()
    return statuses, worker


def assert_died_too_often(row: Any, name: str, attempts: int) -> None:
    """Check that the `failed_jobs` row `row` stores job `name` as killed `attempts` times."""
    assert row.name == name
    assert "worker died" in row.message.lower(), row.message
    assert row.attempts == attempts


def test_a_job_that_kills_its_worker_is_failed_after_run_times_deaths_and_the_rest_run_once(
    target: Target, run_log: Path
) -> None:
    target.queue.push(jobs.KillsItsWorker, args=[str(run_log), "poison"])
    ordinary = [f"ordinary-{number}" for number in range(5)]
    for name in ordinary:
        target.queue.push(jobs.Note, args=[str(run_log), name])

    statuses, last = work_until_a_worker_exits_cleanly(target)

    counts = jobs.runs(run_log)
    assert statuses == [1, 1, 1, 0], f"exit statuses {statuses}; runs {dict(counts)}"
    assert counts["poison"] == jobs.KillsItsWorker.run_times
    assert {name: counts[name] for name in ordinary} == dict.fromkeys(ordinary, 1)
    [row] = target.failures()
    assert_died_too_often(row, POISON, jobs.KillsItsWorker.run_times)
    assert target.pending() == 0
    assert "Traceback" not in last.errors()


def test_a_plain_function_that_kills_its_worker_runs_once_then_is_failed(
    target: Target, run_log: Path
) -> None:
    target.queue.push(jobs.kill_worker, args=[str(run_log), "plain-poison"])
    ordinary = ["ordinary-0", "ordinary-1"]
    for name in ordinary:
        target.queue.push(jobs.Note, args=[str(run_log), name])

    statuses, _last = work_until_a_worker_exits_cleanly(target)

    counts = jobs.runs(run_log)
    runs = AMQP_ONE_ATTEMPT_RUNS if target.name == "amqp" else 1
    assert statuses == [1] * runs + [0], f"exit statuses {statuses}; runs {dict(counts)}"
    assert counts["plain-poison"] == runs
    assert {name: counts[name] for name in ordinary} == dict.fromkeys(ordinary, 1)
    [row] = target.failures()
    assert_died_too_often(row, "tests.reliability.jobs.kill_worker", runs)
    assert target.pending() == 0


def test_concurrency_replaces_children_killed_by_poison_jobs_and_exits_0_once_all_is_done(
    target: Target, run_log: Path
) -> None:
    poison = [f"poison-{number}" for number in range(3)]
    ordinary = [f"ordinary-{number:02d}" for number in range(30)]
    # A poison job at the head of every ten, so each child meets one soon.
    for index, name in enumerate(poison):
        target.queue.push(jobs.KillsItsWorker, args=[str(run_log), name])
        for other in ordinary[index * 10 : index * 10 + 10]:
            target.queue.push(jobs.Note, args=[str(run_log), other])

    supervisor = target.start_worker("--concurrency", "3", "--stop-when-empty")
    status = finish(supervisor, 90)

    output = supervisor.output() + supervisor.errors()
    counts = jobs.runs(run_log)
    assert status == 0, output
    assert {name: counts[name] for name in ordinary} == dict.fromkeys(ordinary, 1)
    runs_allowed = jobs.KillsItsWorker.run_times
    if target.name == "amqp":
        assert all(counts[name] in (runs_allowed - 1, runs_allowed) for name in poison), counts
    else:
        assert {name: counts[name] for name in poison} == dict.fromkeys(poison, runs_allowed)
    failures = target.failures()
    assert len(failures) == 3, [(row.name, row.message) for row in failures]
    for row in failures:
        assert_died_too_often(row, POISON, runs_allowed)
    assert target.pending() == 0
    children = set(re.findall(r"^worker (\d+) on ", output, re.MULTILINE))
    deaths = [
        line
        for line in output.splitlines()
        if any(re.search(rf"\b{pid}\b", line) for pid in children)
        and re.search(r"\b(died|exited)\b", line, re.IGNORECASE)
        and EXIT_STATUS_ONE.search(line)
    ]
    assert deaths, f"no line names a child that died and its exit status:\n{output}"


def test_concurrency_stops_with_one_line_when_every_child_dies_at_start_up(
    target: Target, run_log: Path
) -> None:
    target.queue.push(jobs.Note, args=[str(run_log), "waits-for-a-working-worker"])
    arguments, settings = target.misconfiguration

    supervisor = target.start_worker(
        "--concurrency", "3", "--stop-when-empty", *arguments, **settings
    )
    status = finish(supervisor, 30)

    errors = supervisor.errors()
    lines = [line for line in errors.splitlines() if line.strip()]
    assert status != 0
    assert "Traceback" not in errors, errors
    assert lines, "the supervisor stopped without saying why"
    assert lines[-1].startswith("craft: "), errors
    assert lines.count(lines[-1]) == 1, f"the last line is said more than once:\n{errors}"
    assert jobs.runs(run_log) == {}
    assert target.pending() == 1
