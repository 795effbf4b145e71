"""A worker killed with 10 async jobs in flight loses none of them, on every engine."""

from __future__ import annotations

import signal
from pathlib import Path

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

    ran = (markers / "ran.txt").read_text().splitlines()
    assert sorted(ran) == sorted(names)
    assert target.failures() == []
    assert target.pending() == 0
