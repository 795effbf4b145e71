"""The `async` driver: background threads or child processes of the pushing process."""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.jobs.SendWelcomeEmail import SendWelcomeEmail
from app.services.outbox import Outbox
from container import Container
from providers import bootstrap
from queueing import JobRunner, Queue, Queueable, Signer
from queueing.drivers import AsyncDriver
from queueing.drivers.asynchronous import JobFailedError

BOUNDED = 10.0  # the longest any test waits for jobs that should finish at once


class Journal:
    """What the jobs of these tests did, and in which thread; safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: list[Any] = []
        self.failures: list[tuple[dict[str, Any], BaseException]] = []
        self.first_attempt = threading.Event()

    def write(self, entry: Any) -> None:
        with self._lock:
            self.entries.append(entry)

    def threads(self) -> set[str]:
        return {thread for _, thread in self.entries}


class Gate:
    """Holds a job inside `handle` until the test opens it."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.finished = threading.Event()


class Record(Queueable):
    """Writes down its argument and the thread it ran in."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def handle(self, text: str) -> None:
        self.journal.write((text, threading.current_thread().name))


class Slow(Queueable):
    """Runs until the test opens the gate (or `BOUNDED` seconds pass)."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def handle(self) -> None:
        self.gate.entered.set()
        self.gate.opened.wait(BOUNDED)
        self.gate.finished.set()


class Fails(Queueable):
    """Fails all three attempts, `retry_delay` apart."""

    run_times = 3
    retry_delay = 0.05

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def handle(self) -> None:
        self.journal.write(("attempt", threading.current_thread().name))
        self.journal.first_attempt.set()
        raise RuntimeError("the mail server is down")

    def failed(self, payload: dict[str, Any], error: BaseException) -> None:
        self.journal.failures.append((payload, error))


class RetriesMuchLater(Fails):
    """Its retry is due in half a minute: far beyond any test."""

    retry_delay = 30


class PidService:
    """A service that remembers the process that built it."""

    def __init__(self) -> None:
        self.pid = os.getpid()


class ReportPids(Queueable):
    """Writes the pid its service was built in and the pid it runs in."""

    def __init__(self, service: PidService) -> None:
        self.service = service

    def handle(self, path: str) -> None:
        Path(path).write_text(json.dumps({"service": self.service.pid, "job": os.getpid()}))


def app_with_pid_service(root: Path) -> Container:
    """The application's container (the real bootstrap) plus `PidService`."""
    container = bootstrap(root)
    container.singleton(PidService)
    return container


class Stubborn(Exception):
    """An exception that pickles but cannot be rebuilt from its pickle."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def explode_stubbornly() -> None:
    raise Stubborn("cannot travel back", 7)


def explode() -> None:
    raise ValueError("exploded in the job")


# Fixtures ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def nothing_left_running() -> Iterator[None]:
    """Every test here ends with no thread or child process of its drivers still alive."""
    threads_before = set(threading.enumerate())
    children_before = set(multiprocessing.active_children())
    yield
    threads = [thread.name for thread in set(threading.enumerate()) - threads_before]
    children = set(multiprocessing.active_children()) - children_before
    assert threads == [], f"threads left running: {threads}"
    assert children == set(), f"child processes left running: {children}"


@pytest.fixture
def journal(container: Container) -> Journal:
    journal = Journal()
    container.instance(Journal, journal)
    return journal


@pytest.fixture
def gate(container: Container) -> Iterator[Gate]:
    gate = Gate()
    container.instance(Gate, gate)
    yield gate
    gate.opened.set()  # never leave a job blocked behind a failed assertion


@pytest.fixture
def async_driver(runner: JobRunner) -> Iterator[Callable[..., AsyncDriver]]:
    """Build async drivers over `runner`; every one is closed after the test."""
    drivers: list[AsyncDriver] = []

    def build(runner: JobRunner = runner, **options: Any) -> AsyncDriver:
        options.setdefault("exit_grace", 0)  # closing drops jobs not due yet
        driver = AsyncDriver(runner, **options)
        drivers.append(driver)
        return driver

    yield build
    for driver in drivers:
        driver.close(timeout=BOUNDED)


def eventually(condition: Callable[[], bool], timeout: float = BOUNDED) -> bool:
    """Wait until `condition()` holds, up to `timeout` seconds; say whether it did."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def queue_for(driver: AsyncDriver, signer: Signer) -> Queue:
    return Queue({"async": lambda: driver}, "async", signer)


# Threading --------------------------------------------------------------------------


def test_a_job_runs_in_a_background_thread(
    async_driver: Callable[..., AsyncDriver], signer: Signer, journal: Journal
) -> None:
    driver = async_driver(workers=2)

    queue_for(driver, signer).push(Record, args=["ran"])

    assert driver.drain(BOUNDED)
    [(text, thread)] = journal.entries
    assert text == "ran"
    assert thread != threading.current_thread().name
    assert thread.startswith("queue-async-")


def test_push_returns_before_a_slow_job_finishes(
    async_driver: Callable[..., AsyncDriver], signer: Signer, gate: Gate
) -> None:
    driver = async_driver(workers=1)

    queue_for(driver, signer).push(Slow)

    assert gate.entered.wait(BOUNDED)
    assert not gate.finished.is_set()
    gate.opened.set()
    assert driver.drain(BOUNDED)
    assert gate.finished.is_set()


def test_a_wait_is_honoured(
    async_driver: Callable[..., AsyncDriver], signer: Signer, journal: Journal
) -> None:
    driver = async_driver(workers=1)

    queue_for(driver, signer).push(Record, args=["waited"], wait=1)
    time.sleep(0.5)

    assert journal.entries == []
    assert driver.drain(BOUNDED)
    assert [text for text, _ in journal.entries] == ["waited"]


def test_a_shorter_wait_pushed_later_runs_first(
    async_driver: Callable[..., AsyncDriver], signer: Signer, journal: Journal
) -> None:
    driver = async_driver(workers=1)
    queue = queue_for(driver, signer)

    queue.push(Record, args=["one second"], wait="1 second")
    queue.push(Record, args=["a fifth of a second"], wait=0.2)

    assert driver.drain(BOUNDED)
    assert [text for text, _ in journal.entries] == ["a fifth of a second", "one second"]


def test_retries_run_in_the_background_then_failed_is_called_once(
    async_driver: Callable[..., AsyncDriver],
    signer: Signer,
    journal: Journal,
    failed_store: Any,
) -> None:
    driver = async_driver(workers=2)

    queue_for(driver, signer).push(Fails)

    assert driver.drain(BOUNDED)
    assert [entry for entry, _ in journal.entries] == ["attempt"] * 3
    [(payload, error)] = journal.failures
    assert payload["ran"] == 3
    assert str(error) == "the mail server is down"
    assert failed_store.reasons == ["failed"]


def test_a_pending_retry_does_not_block_the_pusher(
    async_driver: Callable[..., AsyncDriver], signer: Signer, journal: Journal
) -> None:
    driver = async_driver(workers=1)
    queue = queue_for(driver, signer)

    queue.push(RetriesMuchLater)
    assert journal.first_attempt.wait(BOUNDED)
    queue.push(Record, args=["after the failure"])

    assert eventually(lambda: len(journal.entries) == 2)
    assert [entry for entry, _ in journal.entries] == ["attempt", "after the failure"]
    assert not driver.drain(0.2)  # the retry is still waiting its 30 seconds
    assert driver.pending() == 1
    assert journal.failures == []


def test_the_pool_is_reused_across_pushes(
    async_driver: Callable[..., AsyncDriver], signer: Signer, journal: Journal
) -> None:
    before = set(threading.enumerate())
    driver = async_driver(workers=2)
    queue = queue_for(driver, signer)

    for push in range(5):
        queue.push(Record, Record, Record, args=[f"push {push}"])
        assert driver.drain(BOUNDED)

    started = set(threading.enumerate()) - before
    assert len(journal.entries) == 15
    assert len(started) <= 2
    assert journal.threads() <= {thread.name for thread in started}


def test_close_finishes_the_jobs_already_due(
    async_driver: Callable[..., AsyncDriver], signer: Signer, journal: Journal
) -> None:
    driver = async_driver(workers=1)
    queue_for(driver, signer).push(Record, Record, args=["before close"])

    driver.close(timeout=BOUNDED)

    assert [text for text, _ in journal.entries] == ["before close", "before close"]


def test_close_stops_its_threads(
    async_driver: Callable[..., AsyncDriver], signer: Signer, journal: Journal
) -> None:
    before = set(threading.enumerate())
    driver = async_driver(workers=3)
    queue_for(driver, signer).push(Record, args=["x"])

    driver.close(timeout=BOUNDED)

    assert set(threading.enumerate()) - before == set()


def test_push_after_close_is_refused(
    async_driver: Callable[..., AsyncDriver], signer: Signer, journal: Journal
) -> None:
    driver = async_driver(workers=1)
    driver.close()

    with pytest.raises(RuntimeError, match="closed"):
        queue_for(driver, signer).push(Record, args=["too late"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "forking"}, "mode must be one of threading, multiprocess"),
        ({"workers": 0}, "workers must be at least 1"),
        ({"mode": "multiprocess"}, "container_factory"),
    ],
)
def test_bad_options_are_refused(runner: JobRunner, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AsyncDriver(runner, **options)


# Blocking ---------------------------------------------------------------------------


def test_blocking_runs_the_job_before_push_returns(
    async_driver: Callable[..., AsyncDriver], signer: Signer, journal: Journal
) -> None:
    driver = async_driver(blocking=True)

    queue_for(driver, signer).push(Record, args=["now"])

    assert journal.entries == [("now", threading.current_thread().name)]


def test_blocking_prints_a_line_per_job_ran(
    async_driver: Callable[..., AsyncDriver],
    signer: Signer,
    journal: Journal,
    capsys: pytest.CaptureFixture[str],
) -> None:
    driver = async_driver(blocking=True)

    [job_id] = queue_for(driver, signer).push(Record, args=["now"])

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Job Ran: ")
    assert "Record" in lines[0]
    assert job_id[:12] in lines[0]
    assert "done" in lines[0]


def test_blocking_prints_a_line_per_attempt_and_reraises_the_error(
    async_driver: Callable[..., AsyncDriver],
    signer: Signer,
    journal: Journal,
    capsys: pytest.CaptureFixture[str],
) -> None:
    driver = async_driver(blocking=True)

    with pytest.raises(RuntimeError, match="the mail server is down"):
        queue_for(driver, signer).push(Fails)

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert all(line.startswith("Job Ran: ") for line in lines)
    assert " retry 1/3 in " in lines[0]
    assert "failed" in lines[-1]
    assert len(journal.failures) == 1


def test_blocking_surfaces_the_exception_with_the_jobs_traceback(
    async_driver: Callable[..., AsyncDriver], signer: Signer
) -> None:
    driver = async_driver(blocking=True)

    with pytest.raises(ValueError, match="exploded in the job") as raised:
        queue_for(driver, signer).push(explode)

    assert any(entry.name == "explode" for entry in raised.traceback)


# Multiprocess -----------------------------------------------------------------------


def test_multiprocess_runs_a_class_job_with_a_service_of_the_childs_container(
    app: Container, async_driver: Callable[..., AsyncDriver], repo_root: Path
) -> None:
    driver = async_driver(
        runner=app.make(JobRunner),
        mode="multiprocess",
        workers=1,
        container_factory=functools.partial(bootstrap, repo_root),
    )

    queue_for(driver, app.make(Signer)).push(SendWelcomeEmail, args=["ada@example.com"])

    assert driver.drain(60)
    [message] = app.make(Outbox).messages()
    assert message["to"] == "ada@example.com"
    assert message["pid"] != os.getpid()


def test_multiprocess_builds_the_jobs_dependency_in_the_child(
    app: Container,
    async_driver: Callable[..., AsyncDriver],
    repo_root: Path,
    tmp_path: Path,
) -> None:
    report = tmp_path / "pids.json"
    driver = async_driver(
        runner=app.make(JobRunner),
        mode="multiprocess",
        workers=1,
        container_factory=functools.partial(app_with_pid_service, repo_root),
    )

    queue_for(driver, app.make(Signer)).push(ReportPids, args=[str(report)])

    assert driver.drain(60)
    pids = json.loads(report.read_text())
    assert pids["service"] != os.getpid()
    assert pids["service"] == pids["job"]


def test_multiprocess_reuses_its_child_process(
    app: Container, async_driver: Callable[..., AsyncDriver], repo_root: Path
) -> None:
    driver = async_driver(
        runner=app.make(JobRunner),
        mode="multiprocess",
        workers=1,
        container_factory=functools.partial(bootstrap, repo_root),
    )
    queue = queue_for(driver, app.make(Signer))

    queue.push(SendWelcomeEmail, args=["ada@example.com"])
    queue.push(SendWelcomeEmail, args=["grace@example.com"])

    assert driver.drain(60)
    pids = {message["pid"] for message in app.make(Outbox).messages()}
    assert len(pids) == 1
    assert os.getpid() not in pids


def test_multiprocess_blocking_surfaces_the_childs_traceback(
    app: Container, async_driver: Callable[..., AsyncDriver], repo_root: Path
) -> None:
    driver = async_driver(
        runner=app.make(JobRunner),
        mode="multiprocess",
        workers=1,
        blocking=True,
        container_factory=functools.partial(bootstrap, repo_root),
    )

    with pytest.raises(ValueError, match="exploded in the job"):
        queue_for(driver, app.make(Signer)).push(explode)


def test_multiprocess_blocking_surfaces_an_unpicklable_error_with_the_childs_traceback(
    app: Container, async_driver: Callable[..., AsyncDriver], repo_root: Path
) -> None:
    driver = async_driver(
        runner=app.make(JobRunner),
        mode="multiprocess",
        workers=1,
        blocking=True,
        container_factory=functools.partial(bootstrap, repo_root),
    )

    with pytest.raises(JobFailedError) as raised:
        queue_for(driver, app.make(Signer)).push(explode_stubbornly)

    message = str(raised.value)
    assert "Stubborn: cannot travel back" in message
    assert "in explode_stubbornly" in message


def test_a_background_job_that_fails_is_reported_on_stderr_with_its_id(
    async_driver: Callable[..., AsyncDriver],
    signer: Signer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    driver = async_driver()

    [job_id] = queue_for(driver, signer).push(explode)

    assert driver.drain(BOUNDED)
    errors = capsys.readouterr().err
    assert f"async: job {job_id} " in errors
    assert "ValueError: exploded in the job" in errors
