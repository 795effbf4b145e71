"""The `sync` driver: jobs run at push time, with the full retry and failure policy."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from container import Container
from queueing import JobRunner, Outcome, Queue, Queueable, Result, Signer
from queueing.clock import ManualClock
from queueing.drivers import SyncDriver


class Journal:
    """What the jobs of these tests did, and in which thread."""

    def __init__(self) -> None:
        self.entries: list[Any] = []
        self.failures: list[tuple[dict[str, Any], BaseException]] = []


class Record(Queueable):
    """Writes down its argument and the thread it ran in."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def handle(self, text: str) -> None:
        self.journal.entries.append((text, threading.current_thread().name))


class RecordLoudly(Record):
    """Writes down its argument in capitals."""

    def handle(self, text: str) -> None:
        super().handle(text.upper())


class AlwaysFails(Queueable):
    """Fails every one of its three attempts, one second apart."""

    run_times = 3
    retry_delay = 1

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def handle(self) -> None:
        self.journal.entries.append("attempt")
        raise RuntimeError("mail server down")

    def failed(self, payload: dict[str, Any], error: BaseException) -> None:
        self.journal.failures.append((payload, error))


@pytest.fixture
def journal(container: Container) -> Journal:
    journal = Journal()
    container.instance(Journal, journal)
    return journal


def make_queue(driver: SyncDriver, signer: Signer, clock: Any = None) -> Queue:
    return Queue({"sync": lambda: driver}, "sync", signer, clock)


@pytest.fixture
def reported() -> list[Result]:
    return []


@pytest.fixture
def queue(
    runner: JobRunner, signer: Signer, manual_clock: ManualClock, reported: list[Result]
) -> Queue:
    return make_queue(SyncDriver(runner, report=reported.append), signer, manual_clock)


def test_a_job_has_run_when_push_returns(queue: Queue, journal: Journal) -> None:
    queue.push(Record, args=["ran"])

    assert journal.entries == [("ran", threading.current_thread().name)]


def test_several_jobs_of_one_push_run_in_order(queue: Queue, journal: Journal) -> None:
    queue.push(Record, RecordLoudly, args=["x"])

    assert [text for text, _ in journal.entries] == ["x", "X"]


def test_a_failing_job_is_retried_then_failed_before_push_returns(
    queue: Queue, journal: Journal, failed_store: Any, reported: list[Result]
) -> None:
    queue.push(AlwaysFails)

    assert journal.entries == ["attempt"] * 3
    assert [result.outcome for result in reported] == [
        Outcome.RETRY,
        Outcome.RETRY,
        Outcome.FAILED,
    ]
    [(payload, error)] = journal.failures
    assert payload["ran"] == 3
    assert str(error) == "mail server down"
    assert failed_store.reasons == ["failed"]


def test_retry_delays_are_slept_on_the_runners_clock(
    queue: Queue, journal: Journal, manual_clock: ManualClock
) -> None:
    started = manual_clock.now()

    queue.push(AlwaysFails)

    assert manual_clock.now() - started == pytest.approx(2.0)


def test_a_wait_is_slept_out_before_the_job_runs(
    queue: Queue, journal: Journal, manual_clock: ManualClock
) -> None:
    started = manual_clock.now()

    queue.push(Record, args=["later"], wait="10 minutes")

    assert manual_clock.now() - started == pytest.approx(600)
    assert [text for text, _ in journal.entries] == ["later"]


def test_a_failure_does_not_raise_from_push_by_default(queue: Queue, journal: Journal) -> None:
    ids = queue.push(AlwaysFails)

    assert len(ids) == 1


def test_raise_errors_reraises_the_jobs_last_exception(
    runner: JobRunner, signer: Signer, manual_clock: ManualClock, journal: Journal
) -> None:
    queue = make_queue(SyncDriver(runner, raise_errors=True), signer, manual_clock)

    with pytest.raises(RuntimeError, match="mail server down"):
        queue.push(AlwaysFails)

    assert len(journal.failures) == 1


def test_push_after_a_retried_job_runs_when_only_the_runner_has_a_manual_clock(
    container: Container, signer: Signer, failed_store: Any, journal: Journal
) -> None:
    # The natural set-up for a script or test: a real Queue, a runner that does
    # not sleep for real. The retries move the runner's clock ahead of the queue's.
    runner = JobRunner(container, signer, failed_store, ManualClock())
    queue = make_queue(SyncDriver(runner), signer)

    queue.push(AlwaysFails)
    queue.push(Record, args=["next"])

    assert journal.entries[-1][0] == "next"
