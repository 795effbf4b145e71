"""A kill storm: workers SIGKILLed every second while they drain a queue lose no job.

Two `craft queue:work` processes drain a few hundred short jobs; every
second the older one is killed with SIGKILL (no chance to clean up) and a
fresh one started. When the storm is over, one last worker runs with
`--stop-when-empty`. Each run of a job is a line in the run log, so the log
tells what was lost (never ran) and what ran twice (the worker died after
the job ended but before it was acknowledged).

A job in hand when its worker is SIGKILLed has spent that attempt: no
driver can tell the kill from a job that crashed its worker. So a job the
storm happens to catch in hand `run_times` times (on amqp `run_times - 1`,
its death in a killed worker's prefetch being charged too) is failed as
"died" and stored in `failed_jobs`, as a poison job would be. That job is
not lost (`craft queue:retry` runs it again); a job that neither ran nor
was stored is.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.reliability import jobs
from tests.reliability.conftest import Target, finish

JOBS = 300
# Each job works this long, so a kill often lands while one is in hand.
JOB_SECONDS = 0.03
WORKERS = 2
KILL_EVERY = 1.0
# The storm stops once every job ran, or after this many seconds.
STORM_SECONDS = 60.0


def test_a_kill_storm_loses_no_job_and_runs_at_most_one_job_twice_per_kill(
    target: Target, run_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = [f"job-{number:03d}" for number in range(JOBS)]
    target.queue.push(*[jobs.NamedNote(str(run_log), name, JOB_SECONDS) for name in names])

    kills = 0
    died_on_their_own: list[str] = []
    running = [target.start_worker() for _ in range(WORKERS)]
    end = time.monotonic() + STORM_SECONDS
    next_kill = time.monotonic() + KILL_EVERY
    while time.monotonic() < end and len(jobs.runs(run_log)) < JOBS:
        time.sleep(0.05)
        for worker in [worker for worker in running if worker.process.poll() is not None]:
            died_on_their_own.append(f"status {worker.process.returncode}: {worker.errors()}")
            running.remove(worker)
            running.append(target.start_worker())
        if time.monotonic() >= next_kill:
            victim = running.pop(0)
            victim.signal(signal.SIGKILL)
            victim.wait(timeout=10)
            kills += 1
            running.append(target.start_worker())
            next_kill = time.monotonic() + KILL_EVERY

    # The storm ends as it went: the workers still running are killed too
    # (SIGTERM could reach one still starting, before it listens for it).
    for worker in running:
        worker.kill()
        kills += 1
    # The jobs the killed workers held come due again, then one worker drains the rest.
    target.wait_out_leases()
    last = target.start_worker("--stop-when-empty")
    status = finish(last, 60)

    counts = jobs.runs(run_log)
    failures = target.failures()
    died = {job_name(target, row) for row in failures if row.reason == "died"}
    lost = sorted(set(names) - set(counts) - died)
    duplicates = sum(count - 1 for count in counts.values())
    with capsys.disabled():
        print(
            f"\n[{target.name}] kill storm: {JOBS} jobs, {kills} kills, "
            f"{len(lost)} lost, {duplicates} extra runs, {len(died)} failed as died"
        )
    assert status == 0, last.errors()
    assert not died_on_their_own, f"workers exited without being killed: {died_on_their_own}"
    assert kills >= WORKERS + 3, "the storm was too short to test anything"
    assert lost == [], f"{len(lost)} job(s) never ran: {lost[:10]}"
    assert set(counts) <= set(names), "the run log names jobs that were never pushed"
    # One job in hand per worker: a kill can repeat at most that one.
    assert duplicates <= kills, f"{duplicates} extra runs for {kills} kills: {counts}"
    assert target.pending() == 0
    assert [(row.reason, row.message) for row in failures if row.reason != "died"] == []
    # Each job failed as died was in hand at that many kills (see the module's notes).
    kills_each = jobs.NamedNote.run_times - (1 if target.name == "amqp" else 0)
    assert len(failures) == len(died), "a job was stored as failed twice"
    assert len(died) * kills_each <= kills, f"{len(died)} jobs failed as died for {kills} kills"


def job_name(target: Target, row: Any) -> str:
    """The name of the `NamedNote` a `failed_jobs` row stores (its payload, verified and loaded)."""
    return target.queue.signer.load(row.payload)["obj"].name
