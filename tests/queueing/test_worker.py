"""The worker in this process (the main thread, so `--timeout` can interrupt a job).

Jobs run on SQLite, except for lease keeping, which a fake leasing driver shows
call by call.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest

from container import Container
from queueing import Envelope, JobRunner, Queueable, Signer
from queueing.drivers.base import DriverUnavailableError
from queueing.worker import Worker, WorkerOptions
from tests.database_fixtures import Backend, open_backend
from tests.queueing.drivers import jobs_for_database as jobs

STAMP = r"(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)  (?:(?P<process>worker \d+)  )?"
DURATION = r"\d+(?:\.\d)? (?:ms|s)|\d+ min \d\d s"
LINE = re.compile(
    rf"^{STAMP}(?P<job>\S+) +(?P<id>[0-9a-f]{{12}})  (?P<queue>\S+) +"
    r"(?P<outcome>done|retry \S+ in \S+ m?s|failed \S+|parked|released|still running) +"
    rf"(?P<duration>{DURATION})(?:  \((?P<error>.*)\))?$"
)
SUMMARY = re.compile(
    rf"^{STAMP}(?:worker )?stopped after (?P<wall>{DURATION}): (?P<processed>\d+) processed, "
    r"(?P<done>\d+) done, (?P<failed>\d+) failed, (?P<retried>\d+) retried"
)


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    """A database driver on a SQLite file, on the real clock."""
    with open_backend("sqlite", tmp_path, retry_after=60) as backend:
        yield backend


@pytest.fixture
def markers_dir(tmp_path: Path) -> Path:
    """Where the jobs leave their markers."""
    path = tmp_path / "markers"
    path.mkdir()
    return path


def run_worker(
    backend: Backend, on_line: Callable[[str], None] | None = None, **options: object
) -> tuple[Worker, list[str], list[str]]:
    """Run a worker with `options` until it stops; return it, its job lines and its errors.

    The summary line it prints last is checked here and left out.
    """
    lines: list[str] = []
    errors: list[str] = []

    def output(line: str) -> None:
        lines.append(line)
        if on_line is not None:
            on_line(line)

    worker = Worker(
        backend.driver,
        backend.runner,
        WorkerOptions(**{"sleep": 0.05, **options}),  # type: ignore[arg-type]
        output=output,
        errors=errors.append,
    )
    assert worker.run() == 0
    *job_lines, summary = lines
    assert SUMMARY.match(summary), f"not a summary line: {summary!r}"
    return worker, job_lines, errors


def parsed(lines: list[str]) -> list[dict[str, str]]:
    """Split each job line into its fields, failing on a line of another shape."""
    fields = []
    for line in lines:
        match = LINE.match(line)
        assert match, f"not a job line: {line!r}"
        fields.append(match.groupdict())
    return fields


def test_the_worker_runs_jobs_and_prints_one_line_per_job(
    backend: Backend, markers_dir: Path
) -> None:
    pushed = backend.queue.push(jobs.Record, args=[str(markers_dir), "class"])
    pushed += backend.queue.push(jobs.record, args=[str(markers_dir), "function"])
    pushed += backend.queue.push(
        functools.partial(jobs.record, str(markers_dir), "other"), queue="mail"
    )

    worker, lines, errors = run_worker(backend, queues=["default", "mail"], stop_when_empty=True)

    assert worker.processed == 3
    assert errors == []
    assert [(f["job"], f["id"], f["queue"], f["outcome"]) for f in parsed(lines)] == [
        ("Record", pushed[0][:12], "default", "done"),
        ("record", pushed[1][:12], "default", "done"),
        ("record", pushed[2][:12], "mail", "done"),
    ]
    assert jobs.runs_by_name(markers_dir) == {"class": 1, "function": 1, "other": 1}
    assert backend.jobs() == []


def test_a_retry_goes_back_with_its_delay_and_the_worker_runs_other_jobs_meanwhile(
    backend: Backend, markers_dir: Path
) -> None:
    [flaky] = backend.queue.push(jobs.FailOnce, args=[str(markers_dir), "flaky"])
    backend.queue.push(jobs.Record, args=[str(markers_dir), "meanwhile"])
    snapshots = []

    def on_line(line: str) -> None:
        if " retry " in line:
            snapshots.append((time.time(), backend.jobs()))

    started = time.time()
    _worker, lines, _errors = run_worker(backend, on_line, stop_when_empty=True)

    assert [(f["job"], f["outcome"]) for f in parsed(lines)] == [
        ("FailOnce", "retry 1/3 in 1 s"),
        ("Record", "done"),
        ("FailOnce", "done"),
    ]
    assert "RuntimeError: the first attempt fails" in lines[0]
    [(seen_at, rows)] = snapshots
    row = next(row for row in rows if row.uuid == flaky)
    assert (row.attempts, row.reserved_by, row.reserved_until) == (1, None, None)
    assert round((started + 1) * 1000) <= row.available_at <= round((seen_at + 1) * 1000)
    [meanwhile] = jobs.marker_times(markers_dir, "meanwhile")
    first_attempt, second_attempt = jobs.marker_times(markers_dir, "flaky", "attempt")
    # The other job ran while the retry waited: the worker did not sleep out the delay.
    assert first_attempt < meanwhile < row.available_at / 1000 <= second_attempt
    assert backend.jobs() == []
    assert backend.failures() == []


def test_max_jobs_stops_the_worker_after_that_many_jobs(
    backend: Backend, markers_dir: Path
) -> None:
    backend.queue.push(*[jobs.Record] * 5, args=[str(markers_dir), "job"])

    worker, lines, _errors = run_worker(backend, max_jobs=2)

    assert worker.processed == 2
    assert len(lines) == 2
    assert jobs.runs_by_name(markers_dir) == {"job": 2}
    assert len(backend.jobs()) == 3


def test_stop_when_empty_waits_for_delayed_jobs(backend: Backend, markers_dir: Path) -> None:
    pushed_at = time.time()
    backend.queue.push(jobs.Record, args=[str(markers_dir), "delayed"], wait=1)

    worker, _lines, _errors = run_worker(backend, stop_when_empty=True)

    assert worker.processed == 1
    [ran_at] = jobs.marker_times(markers_dir, "delayed")
    assert ran_at >= pushed_at + 0.999  # due times are whole milliseconds
    assert backend.jobs() == []


def test_stop_when_empty_returns_at_once_when_nothing_is_queued(backend: Backend) -> None:
    worker, lines, errors = run_worker(backend, stop_when_empty=True)

    assert (worker.processed, lines, errors) == (0, [], [])


def test_timeout_fails_a_job_running_too_long_and_the_worker_goes_on(
    backend: Backend, markers_dir: Path
) -> None:
    [slow] = backend.queue.push(jobs.sleep_then_record, args=[str(markers_dir), "slow", 30])
    backend.queue.push(jobs.Record, args=[str(markers_dir), "next"])

    worker, lines, errors = run_worker(backend, stop_when_empty=True, timeout=0.5)

    fields = parsed(lines)
    assert [(f["job"], f["outcome"]) for f in fields] == [
        ("sleep_then_record", "failed 1/1"),
        ("Record", "done"),
    ]
    assert fields[0]["error"] == "TimeoutError: job timed out after 0.5s"
    assert any(slow in line and "timed out" in line for line in errors)
    assert len(jobs.markers(markers_dir, "slow", "started")) == 1
    assert jobs.runs_by_name(markers_dir) == {"next": 1}
    [failure] = backend.failures()
    assert (failure.uuid, failure.exception_type, failure.message) == (
        slow,
        "TimeoutError",
        "job timed out after 0.5s",
    )
    assert worker.processed == 2
    assert backend.jobs() == []


def test_a_timed_out_attempt_of_a_job_class_is_retried(backend: Backend, markers_dir: Path) -> None:
    backend.queue.push(jobs.SlowRecord, args=[str(markers_dir), "slow", 30])

    _worker, lines, _errors = run_worker(backend, max_jobs=1, timeout=0.3)

    [fields] = parsed(lines)
    assert fields["outcome"] == "retry 1/3 in 1 s"
    assert fields["error"] == "TimeoutError: job timed out after 0.3s"
    [row] = backend.jobs()
    assert (row.attempts, row.reserved_by) == (1, None)


# What the worker prints ---------------------------------------------------------------


def test_job_lines_line_up_in_columns_whatever_the_job_and_queue_names(
    backend: Backend, markers_dir: Path
) -> None:
    backend.queue.push(jobs.Record, args=[str(markers_dir), "short"])
    backend.queue.push(jobs.sleep_then_record, args=[str(markers_dir), "long", 0], queue="mail")
    backend.queue.push(jobs.Record, args=[str(markers_dir), "again"], queue="mail")

    _worker, lines, _errors = run_worker(backend, queues=["default", "mail"], stop_when_empty=True)

    fields = parsed(lines)
    assert [f["job"] for f in fields] == ["Record", "sleep_then_record", "Record"]
    for column in ("id", "queue", "outcome"):
        starts = {line.index(f[column], 20) for line, f in zip(lines, fields, strict=True)}
        assert len(starts) == 1, f"the {column} column moves:\n" + "\n".join(lines)
    assert len({len(line) for line in lines}) == 1, "durations are not right-aligned"


def test_a_worker_serving_one_queue_keeps_id_queue_and_outcome_two_spaces_apart(
    backend: Backend, markers_dir: Path
) -> None:
    [job_id] = backend.queue.push(jobs.Record, args=[str(markers_dir), "one"])

    _worker, [line], _errors = run_worker(backend, stop_when_empty=True)

    assert f"{job_id[:12]}  default  done " in line


def test_the_duration_reads_in_milliseconds_or_seconds(backend: Backend, markers_dir: Path) -> None:
    backend.queue.push(jobs.Record, args=[str(markers_dir), "quick"])
    backend.queue.push(jobs.sleep_then_record, args=[str(markers_dir), "slow", 1.1])

    _worker, lines, _errors = run_worker(backend, stop_when_empty=True)

    quick, slow = (f["duration"] for f in parsed(lines))
    assert re.fullmatch(r"\d+(\.\d)? ms", quick)
    assert re.fullmatch(r"1\.\d s", slow)


def test_the_worker_ends_with_a_summary_of_what_it_did(backend: Backend, markers_dir: Path) -> None:
    backend.queue.push(jobs.Record, args=[str(markers_dir), "fine"])
    backend.queue.push(jobs.FailOnce, args=[str(markers_dir), "flaky"])
    backend.queue.push(jobs.Explode, args=["the disk is full"])
    lines: list[str] = []
    worker = Worker(
        backend.driver,
        backend.runner,
        WorkerOptions(stop_when_empty=True, sleep=0.05),
        output=lines.append,
        errors=lambda _line: None,
    )

    worker.run()

    summary = SUMMARY.match(lines[-1])
    assert summary, lines[-1]
    counts = {key: summary[key] for key in ("processed", "done", "failed", "retried")}
    assert counts == {"processed": "4", "done": "2", "failed": "1", "retried": "1"}


def test_a_long_job_gets_a_still_running_line_every_interval(
    backend: Backend, markers_dir: Path
) -> None:
    [slow] = backend.queue.push(jobs.sleep_then_record, args=[str(markers_dir), "slow", 1.3])

    _worker, lines, _errors = run_worker(backend, stop_when_empty=True, still_running_every=0.5)

    fields = parsed(lines)
    assert [(f["id"], f["outcome"]) for f in fields] == [
        (slow[:12], "still running"),
        (slow[:12], "still running"),
        (slow[:12], "done"),
    ]
    # How long the job had run when each line was printed.
    assert re.fullmatch(r"(5|6)\d\d ms", fields[0]["duration"]), lines
    assert re.fullmatch(r"1\.[01] s", fields[1]["duration"]), lines


def test_a_quick_job_gets_no_still_running_line(backend: Backend, markers_dir: Path) -> None:
    backend.queue.push(*[jobs.Record] * 3, args=[str(markers_dir), "quick"])

    _worker, lines, _errors = run_worker(backend, stop_when_empty=True, still_running_every=0.5)

    assert [f["outcome"] for f in parsed(lines)] == ["done", "done", "done"]


def test_a_named_worker_process_says_so_on_every_line(backend: Backend, markers_dir: Path) -> None:
    backend.queue.push(jobs.Record, args=[str(markers_dir), "one"])

    _worker, [line], _errors = run_worker(backend, stop_when_empty=True, process="worker 2")

    assert parsed([line])[0]["process"] == "worker 2"


def test_lines_are_coloured_only_when_asked(backend: Backend, markers_dir: Path) -> None:
    backend.queue.push(*[jobs.Record] * 2, args=[str(markers_dir), "one"])
    coloured: list[str] = []
    plain: list[str] = []
    options = WorkerOptions(stop_when_empty=True, sleep=0.05, max_jobs=1)

    Worker(backend.driver, backend.runner, options, output=coloured.append, colour=True).run()
    Worker(backend.driver, backend.runner, options, output=plain.append).run()

    assert "\x1b[32mdone" in coloured[0]  # green
    assert parsed([click.unstyle(coloured[0])])[0]["outcome"] == "done"
    assert "\x1b[" not in "".join(plain)


# Lease keeping ------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One call a `LeasingDriver` received."""

    what: str
    job: str
    thread: threading.Thread


@dataclass
class Handed:
    """A job as `LeasingDriver` hands it out."""

    envelope: Envelope


class LeasingDriver:
    """A driver whose jobs hold a lease: it hands out envelopes and records every call.

    `extend` takes `extend_takes` seconds, and sets `extending` as it starts.
    """

    name = "leasing"

    def __init__(
        self, envelopes: list[Envelope], retry_after: float, extend_takes: float = 0.0
    ) -> None:
        self.retry_after = retry_after
        self.extend_takes = extend_takes
        self.extending = threading.Event()
        self.calls: list[Call] = []
        self._pending = [Handed(envelope.started()) for envelope in envelopes]
        self._lock = threading.Lock()

    @property
    def extend_every(self) -> float:
        """A third of the lease, as the database driver does."""
        return max(0.5, self.retry_after / 3)

    def reserve(self, queues: Sequence[str], channel: str | None = None) -> Handed | None:
        """Hand out the next envelope."""
        return self._pending.pop(0) if self._pending else None

    def acknowledge(self, held: Handed) -> bool:
        """Record the acknowledgement."""
        return self._record("acknowledge", held)

    def release(self, held: Handed, delay: float = 0.0, count_attempt: bool = True) -> bool:
        """Record the release."""
        return self._record("release", held)

    def bury(self, held: Handed) -> bool:
        """Record the burial."""
        return self._record("bury", held)

    def extend(self, held: Handed) -> bool:
        """Record the start and the end of an extension that takes `extend_takes`."""
        self._record("extend", held)
        self.extending.set()
        time.sleep(self.extend_takes)
        return self._record("extended", held)

    def of(self, envelope: Envelope, what: str) -> list[int]:
        """Return the positions, among all calls, of the `what` calls for `envelope`."""
        return [
            index
            for index, call in enumerate(self.calls)
            if call.job == envelope.id and call.what == what
        ]

    def _record(self, what: str, held: Handed) -> bool:
        with self._lock:
            self.calls.append(Call(what, held.envelope.id, threading.current_thread()))
        return True


class Nap(Queueable):
    """A job that takes `seconds`."""

    def handle(self, seconds: float) -> None:
        time.sleep(seconds)


class WaitForExtension(Queueable):
    """A job that ends as soon as the driver starts extending its lease."""

    def handle(self, driver: LeasingDriver) -> None:
        assert driver.extending.wait(5), "the lease was never extended"


def drain(driver: LeasingDriver, runner: JobRunner) -> Worker:
    """Run a quiet worker over `driver` until it has nothing left."""
    worker = Worker(driver, runner, WorkerOptions(stop_when_empty=True, quiet=True, sleep=0.05))
    assert worker.run() == 0
    return worker


def lease_threads() -> list[threading.Thread]:
    """The worker's lease-keeping threads still alive."""
    return [thread for thread in threading.enumerate() if thread.name == "queue-lease"]


def test_one_lease_thread_extends_each_long_job_only_until_it_is_settled(
    runner: JobRunner, envelope_for: Callable[..., Envelope]
) -> None:
    # A 1.5 s lease is extended every 0.5 s: once or more during a 0.8 s job.
    envelopes = [envelope_for(Nap, args=(0.8,)) for _ in range(2)]
    driver = LeasingDriver(envelopes, retry_after=1.5)

    worker = drain(driver, runner)

    assert worker.processed == 2
    for envelope in envelopes:
        extends = driver.of(envelope, "extend")
        [acknowledged] = driver.of(envelope, "acknowledge")
        assert extends, f"job {envelope.id} was never extended"
        assert max(driver.of(envelope, "extended")) < acknowledged
    extending_threads = {call.thread for call in driver.calls if call.what == "extend"}
    assert len(extending_threads) == 1
    assert threading.current_thread() not in extending_threads
    assert lease_threads() == []


def test_settling_a_job_waits_for_the_extension_under_way(
    container: Container, runner: JobRunner, envelope_for: Callable[..., Envelope]
) -> None:
    envelope = envelope_for(WaitForExtension)
    driver = LeasingDriver([envelope], retry_after=1.5, extend_takes=0.3)
    container.instance(LeasingDriver, driver)

    drain(driver, runner)

    assert [call.what for call in driver.calls] == ["extend", "extended", "acknowledge"]


def test_short_jobs_are_never_extended_and_leave_no_lease_thread(
    runner: JobRunner, envelope_for: Callable[..., Envelope]
) -> None:
    envelopes = [envelope_for(Nap, args=(0.0,)) for _ in range(50)]
    driver = LeasingDriver(envelopes, retry_after=60)

    worker = drain(driver, runner)

    assert worker.processed == 50
    assert {call.what for call in driver.calls} == {"acknowledge"}
    assert lease_threads() == []


class RefusingDriver(LeasingDriver):
    """A driver whose server refuses every acknowledgement for good."""

    def acknowledge(self, held: Handed) -> bool:
        self._record("acknowledge", held)
        raise Refused("the broker refused it")


class Refused(DriverUnavailableError):
    retryable = False


def test_a_settlement_the_driver_refuses_for_good_is_reported_once_and_the_worker_goes_on(
    runner: JobRunner, envelope_for: Callable[..., Envelope]
) -> None:
    envelopes = [envelope_for(Nap, args=(0,)) for _ in range(2)]
    driver = RefusingDriver(envelopes, retry_after=60)
    errors: list[str] = []

    worker = Worker(
        driver,
        runner,
        WorkerOptions(stop_when_empty=True, quiet=True, sleep=0.05),
        output=lambda _line: None,
        errors=errors.append,
    )

    assert worker.run() == 0
    assert [len(driver.of(envelope, "acknowledge")) for envelope in envelopes] == [1, 1]
    assert errors == ["leasing refused to settle the job: the broker refused it"] * 2


class Doomed(Queueable):
    """Fails on its only attempt."""

    run_again_on_fail = False

    def handle(self) -> None:
        raise ValueError("doomed")


class StoreDownOnce:
    """A failed-job store whose server is down for the first call."""

    def __init__(self) -> None:
        self.calls = 0
        self.stored: list[Any] = []

    def store(self, failure: Any) -> None:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("the failed_jobs database is down")
        self.stored.append(failure)


def test_a_failed_job_is_not_removed_until_its_failure_is_stored(
    container: Container, signer: Signer, envelope_for: Callable[..., Envelope]
) -> None:
    store = StoreDownOnce()
    runner = JobRunner(container, signer, store)
    [envelope] = [envelope_for(Doomed)]
    driver = LeasingDriver([envelope], retry_after=60)
    errors: list[str] = []

    Worker(
        driver,
        runner,
        WorkerOptions(stop_when_empty=True, quiet=True, sleep=0.05),
        output=lambda _line: None,
        errors=errors.append,
    ).run()

    assert store.calls == 2 and [failure.envelope.id for failure in store.stored] == [envelope.id]
    assert len(driver.of(envelope, "bury")) == 1
    assert any("cannot store the failure" in line for line in errors)
