"""Async jobs under faults, on every engine: kills, stops, timeouts and failures."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.database_fixtures import wait_until
from tests.queueing import jobs_for_coroutines as coroutine_jobs
from tests.reliability.conftest import Target, finish

IN_FLIGHT = 10


def test_a_worker_killed_with_10_async_jobs_in_flight_loses_none_of_them(
    target: Target, tmp_path: Path
) -> None:
    markers = tmp_path / "async-markers"
    markers.mkdir()
    names = [f"job-{number}" for number in range(IN_FLIGHT)]
    for name in names:
        target.queue.push(coroutine_jobs.HangsOnFirstRun, args=[str(markers), name])

    first = target.start_worker("--async-concurrency", str(IN_FLIGHT))
    wait_until(
        lambda: len(list(markers.glob("*.started"))) == IN_FLIGHT,
        30,
        "the 10 async jobs never ran at once",
    )
    first.signal(signal.SIGKILL)
    first.wait(timeout=10)
    target.wait_out_leases()

    last = target.start_worker("--stop-when-empty")
    assert finish(last, 90) == 0, last.errors()

    assert sorted(_lines(markers / "ran.txt")) == sorted(names)
    assert target.failures() == []
    assert target.pending() == 0


def test_sigterm_acknowledges_finished_async_jobs_and_puts_back_the_rest(
    target: Target, tmp_path: Path
) -> None:
    markers = tmp_path / "async-markers"
    markers.mkdir()
    hanging = [f"hangs-{number}" for number in range(3)]
    quick = [f"quick-{number}" for number in range(3)]
    for name in hanging:
        target.queue.push(coroutine_jobs.HangsOnFirstRun, args=[str(markers), name])
    for name in quick:
        target.queue.push(coroutine_jobs.QuickAsync, args=[str(markers), name])

    worker = target.start_worker("--grace", "0.5")
    wait_until(
        lambda: (
            len(_lines(markers / "ran.txt")) == len(quick)
            and len(list(markers.glob("*.started"))) == len(hanging)
        ),
        30,
        "the jobs did not all start",
    )
    worker.signal(signal.SIGTERM)
    assert finish(worker, 30) == 0, worker.errors()
    assert target.pending() == len(hanging)  # back on the queue, not held by anyone

    last = target.start_worker("--stop-when-empty")
    assert finish(last, 60) == 0, last.errors()

    assert sorted(_lines(markers / "ran.txt")) == sorted(quick + hanging)
    assert target.failures() == []


def test_timeout_cancels_an_async_job_that_awaits_for_ever(target: Target, tmp_path: Path) -> None:
    markers = tmp_path / "async-markers"
    markers.mkdir()
    target.queue.push(coroutine_jobs.Sleeps, args=[str(markers / "sleeps.txt")])
    target.queue.push(coroutine_jobs.QuickAsync, args=[str(markers), "after"])

    worker = target.start_worker("--timeout", "0.5", "--stop-when-empty")
    assert finish(worker, 60) == 0, worker.errors()

    assert _lines(markers / "ran.txt") == ["after"]
    [row] = target.failures()
    assert "timed out after 0.5s" in row.message


def test_an_async_job_that_raises_is_retried_and_its_async_failed_awaited_once(
    target: Target, tmp_path: Path
) -> None:
    log = tmp_path / "async-fails.txt"
    target.queue.push(coroutine_jobs.AsyncFails, args=[str(log)])

    worker = target.start_worker("--stop-when-empty")
    assert finish(worker, 60) == 0, worker.errors()

    assert _lines(log) == ["attempt"] * 3 + ["failed: the async job failed"], worker.output()
    [row] = target.failures()
    assert (row.attempts, row.exception_type) == (3, "RuntimeError")


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize("target", ["amqp"], indirect=True)
def test_an_async_poison_job_among_others_on_amqp_dies_run_times_and_the_rest_all_run(
    target: Target, tmp_path: Path
) -> None:
    """Redelivered jobs run alone even with async jobs in flight, so deaths are counted right."""
    markers = tmp_path / "async-markers"
    markers.mkdir()
    log = markers / "poison.txt"
    target.queue.push(coroutine_jobs.AsyncKillsItsWorker, args=[str(log)])
    # Plain async functions: one attempt each, so a death wrongly counted fails them.
    others = [f"other-{number}" for number in range(9)]
    for name in others:
        target.queue.push(coroutine_jobs.async_function, args=[str(markers / "ran.txt"), name])

    statuses = []
    for _ in range(10):
        worker = target.start_worker("--stop-when-empty", "--async-concurrency", "10")
        statuses.append(finish(worker, 60))
        if statuses[-1] == 0:
            break

    assert statuses[-1] == 0, statuses
    assert _lines(log) == ["poison"] * coroutine_jobs.AsyncKillsItsWorker.run_times
    assert set(_lines(markers / "ran.txt")) == {f"function {name}" for name in others}
    [row] = target.failures()
    assert row.reason == "died"
