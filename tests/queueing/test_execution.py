"""The one execution path: building jobs, calling them, retries, `failed()` and the store."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import pytest

from container import Container
from queueing import Envelope, JobRunner, Outcome, Queueable, Result
from queueing.clock import ManualClock


class Mailer:
    """A service jobs get from the container; it keeps what it sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, to: str, subject: str) -> None:
        self.sent.append((to, subject))


class Journal:
    """Where the jobs of these tests write down what happened to them."""

    def __init__(self) -> None:
        self.entries: list[Any] = []
        self.failures: list[tuple[dict[str, Any], BaseException]] = []


class Unbound(Protocol):
    """A service nobody binds: a Protocol, which the container cannot build by itself."""

    def serve(self) -> None: ...


def note(path: str, text: str) -> None:
    """Append a line to `path`: how function jobs report that they ran."""
    with open(path, "a", encoding="utf-8") as file:
        file.write(text + "\n")


def read_notes(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# Jobs ---------------------------------------------------------------------------------


class SendWelcomeEmail(Queueable):
    """Built by the container, which gives it a `Mailer`."""

    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer

    def handle(self, to: str, subject: str = "Welcome") -> None:
        self.mailer.send(to, subject)


class Counted(Queueable):
    """Counts its constructor calls; an instance carries its `label`."""

    constructed = 0

    def __init__(self, label: str) -> None:
        type(self).constructed += 1
        self.label = label

    def handle(self, journal: Journal, suffix: str) -> None:
        journal.entries.append(self.label + suffix)


class Report(Queueable):
    """Has a second method a push can name as its callback."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def handle(self) -> None:
        self.journal.entries.append("handle")

    def summary(self, period: str) -> None:
        self.journal.entries.append(f"summary of {period}")


class MailFromHandle(Queueable):
    """Takes its service in `handle` rather than in its constructor."""

    def handle(self, mailer: Mailer, to: str) -> None:
        mailer.send(to, "from handle")


class AlwaysFails(Queueable):
    """Fails every attempt, and writes down each attempt and the `failed()` call."""

    run_times = 3
    retry_delay = 1

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def handle(self, *args: Any) -> None:
        self.journal.entries.append(("attempt", args))
        raise RuntimeError(f"boom on attempt {len(self.journal.entries)}")

    def failed(self, payload: dict[str, Any], error: BaseException) -> None:
        self.journal.failures.append((payload, error))


class FailsOnce(AlwaysFails):
    """Gets a single attempt."""

    run_again_on_fail = False


class BacksOff(AlwaysFails):
    """Waits 2 s, then 6 s, then 18 s (capped at 10 s) between attempts."""

    run_times = 4
    retry_delay = 2
    backoff = 3
    max_retry_delay = 10


class Recovers(AlwaysFails):
    """Fails twice, then succeeds."""

    def handle(self, *args: Any) -> None:
        self.journal.entries.append(("attempt", args))
        if len(self.journal.entries) < 3:
            raise RuntimeError("not yet")


class NeedsUnbound(Queueable):
    """Cannot be built: nothing binds `Unbound`."""

    run_times = 2

    def __init__(self, service: Unbound) -> None:
        self.service = service

    def handle(self) -> None:
        raise AssertionError("never built, so never run")


class TouchesMissingAttribute(Queueable):
    """Its `handle` exists; an AttributeError is raised inside it."""

    run_again_on_fail = False

    def handle(self) -> None:
        self.settings.timeout  # type: ignore[attr-defined]  # noqa: B018


class FailedRaises(Queueable):
    """Its `failed()` callback itself raises."""

    run_again_on_fail = False

    def handle(self) -> None:
        raise ValueError("the job failed")

    def failed(self, payload: dict[str, Any], error: BaseException) -> None:
        raise RuntimeError("failed() broke too")


class PlainJob:
    """Not a Queueable: runs once and never gets `failed()`."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def handle(self) -> None:
        self.journal.entries.append("plain attempt")
        raise RuntimeError("plain job failed")

    def failed(self, payload: dict[str, Any], error: BaseException) -> None:
        self.journal.failures.append((payload, error))


class Greeter:
    """Its bound method is pushed as a job; the instance goes along."""

    def __init__(self, greeting: str) -> None:
        self.greeting = greeting

    def greet(self, path: str, name: str, punctuation: str = ".") -> None:
        note(path, f"{self.greeting} {name}{punctuation}")


def explode(path: str) -> None:
    note(path, "explode ran")
    raise ValueError("a plain function failed")


def make_closure(prefix: str) -> Callable[[str, str], None]:
    def write(path: str, text: str) -> None:
        note(path, prefix + text)

    return write


# Fixtures ---------------------------------------------------------------------------


@pytest.fixture
def mailer(container: Container) -> Mailer:
    mailer = Mailer()
    container.instance(Mailer, mailer)
    return mailer


@pytest.fixture
def journal(container: Container) -> Journal:
    journal = Journal()
    container.instance(Journal, journal)
    return journal


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    return tmp_path / "notes.txt"


@pytest.fixture
def settle(runner: JobRunner) -> Callable[[Envelope], tuple[Result, list[Result]]]:
    """Run an envelope to the end; return the final result and every attempt's."""

    def run(envelope: Envelope) -> tuple[Result, list[Result]]:
        attempts: list[Result] = []
        final = runner.run_until_settled(envelope, report=attempts.append)
        return final, attempts

    return run


# What runs --------------------------------------------------------------------------


def test_a_class_job_is_built_by_the_container_and_gets_the_args(
    settle: Callable[..., Any], envelope_for: Callable[..., Envelope], mailer: Mailer
) -> None:
    result, _ = settle(envelope_for(SendWelcomeEmail, args=("ada@example.com",)))

    assert result.outcome is Outcome.DONE
    assert mailer.sent == [("ada@example.com", "Welcome")]


def test_a_class_job_gets_kwargs(
    settle: Callable[..., Any], envelope_for: Callable[..., Envelope], mailer: Mailer
) -> None:
    settle(envelope_for(SendWelcomeEmail, args=("ada@example.com",), kwargs={"subject": "Hi Ada"}))

    assert mailer.sent == [("ada@example.com", "Hi Ada")]


def test_an_instance_keeps_its_state_and_is_not_constructed_again(
    settle: Callable[..., Any], envelope_for: Callable[..., Envelope], journal: Journal
) -> None:
    Counted.constructed = 0
    job = Counted("from the pusher")
    envelope = envelope_for(job, args=("!",))

    result, _ = settle(envelope)

    assert result.outcome is Outcome.DONE
    assert journal.entries == ["from the pusher!"]
    assert Counted.constructed == 1


def test_a_plain_function_runs_with_args_and_kwargs(
    settle: Callable[..., Any], envelope_for: Callable[..., Envelope], notes: Path
) -> None:
    result, _ = settle(envelope_for(note, args=(str(notes),), kwargs={"text": "function ran"}))

    assert result.outcome is Outcome.DONE
    assert read_notes(notes) == ["function ran"]


def test_a_lambda_runs_with_args(
    settle: Callable[..., Any], envelope_for: Callable[..., Envelope], notes: Path
) -> None:
    settle(envelope_for(lambda path, text: note(path, text.upper()), args=(str(notes), "lambda")))

    assert read_notes(notes) == ["LAMBDA"]


def test_a_closure_runs_with_what_it_closed_over(
    settle: Callable[..., Any], envelope_for: Callable[..., Envelope], notes: Path
) -> None:
    settle(envelope_for(make_closure("closed over: "), args=(str(notes), "x")))

    assert read_notes(notes) == ["closed over: x"]


def test_a_bound_method_runs_on_its_instance_with_args_and_kwargs(
    settle: Callable[..., Any], envelope_for: Callable[..., Envelope], notes: Path
) -> None:
    job = Greeter("Hello").greet

    settle(envelope_for(job, args=(str(notes), "Ada"), kwargs={"punctuation": "!"}))

    assert read_notes(notes) == ["Hello Ada!"]


def test_a_callback_names_the_method_that_runs(
    settle: Callable[..., Any], envelope_for: Callable[..., Envelope], journal: Journal
) -> None:
    settle(envelope_for(Report, args=("March",), callback="summary"))

    assert journal.entries == ["summary of March"]


def test_handle_gets_its_annotated_service_from_the_container(
    settle: Callable[..., Any], envelope_for: Callable[..., Envelope], mailer: Mailer
) -> None:
    settle(envelope_for(MailFromHandle, args=("ada@example.com",)))

    assert mailer.sent == [("ada@example.com", "from handle")]


def test_an_instance_handle_gets_its_service_from_the_container(
    settle: Callable[..., Any], envelope_for: Callable[..., Envelope], mailer: Mailer
) -> None:
    settle(envelope_for(MailFromHandle(), args=("ada@example.com",)))

    assert mailer.sent == [("ada@example.com", "from handle")]


def test_a_job_without_the_named_callback_fails_saying_so(
    settle: Callable[..., Any],
    envelope_for: Callable[..., Envelope],
    journal: Journal,
    failed_store: Any,
) -> None:
    result, _ = settle(envelope_for(FailsOnce, callback="nowhere"))

    assert result.outcome is Outcome.FAILED
    assert "has no method 'nowhere'" in result.error_text
    assert len(failed_store.failures) == 1


# Retries and failure ----------------------------------------------------------------


def test_a_queueable_is_tried_run_times_then_failed_once(
    settle: Callable[..., Any],
    envelope_for: Callable[..., Envelope],
    journal: Journal,
) -> None:
    result, attempts = settle(envelope_for(AlwaysFails, args=("a",)))

    assert result.outcome is Outcome.FAILED
    assert [attempt.outcome for attempt in attempts] == [
        Outcome.RETRY,
        Outcome.RETRY,
        Outcome.FAILED,
    ]
    assert len(journal.entries) == 3
    assert len(journal.failures) == 1


def test_failed_gets_the_payload_and_the_last_error(
    settle: Callable[..., Any],
    envelope_for: Callable[..., Envelope],
    journal: Journal,
) -> None:
    envelope = envelope_for(AlwaysFails, args=("a", 1), queue="emails")

    settle(envelope)

    [(payload, error)] = journal.failures
    assert set(payload) >= {"obj", "args", "callback", "created", "ran"}
    assert set(payload) >= {"id", "name", "queue", "driver"}
    assert payload["obj"] is AlwaysFails
    assert payload["args"] == ("a", 1)
    assert payload["callback"] == "handle"
    assert payload["created"] == envelope.created
    assert payload["ran"] == 3
    assert payload["id"] == envelope.id
    assert payload["name"] == "test_execution.AlwaysFails"
    assert payload["queue"] == "emails"
    assert payload["driver"] == "test"
    assert isinstance(error, RuntimeError)
    assert str(error) == "boom on attempt 3"


def test_a_job_that_fails_for_good_is_stored_once(
    settle: Callable[..., Any],
    envelope_for: Callable[..., Envelope],
    journal: Journal,
    failed_store: Any,
) -> None:
    envelope = envelope_for(AlwaysFails)

    settle(envelope)

    [failure] = failed_store.failures
    assert failure.reason == "failed"
    assert failure.envelope.id == envelope.id
    assert failure.envelope.attempts == 3
    assert failure.exception_type == "RuntimeError"
    assert failure.message == "boom on attempt 3"
    assert "boom on attempt 3" in failure.traceback


def test_run_again_on_fail_false_means_one_attempt(
    settle: Callable[..., Any],
    envelope_for: Callable[..., Envelope],
    journal: Journal,
    failed_store: Any,
) -> None:
    result, attempts = settle(envelope_for(FailsOnce))

    assert result.outcome is Outcome.FAILED
    assert len(attempts) == 1
    assert len(journal.failures) == 1
    assert journal.failures[0][0]["ran"] == 1
    assert len(failed_store.failures) == 1


def test_retries_wait_the_retry_delay(
    settle: Callable[..., Any],
    envelope_for: Callable[..., Envelope],
    journal: Journal,
    manual_clock: ManualClock,
) -> None:
    started = manual_clock.now()

    _, attempts = settle(envelope_for(AlwaysFails))

    assert [attempt.retry_in for attempt in attempts[:-1]] == [1.0, 1.0]
    assert manual_clock.now() - started == pytest.approx(2.0)


def test_backoff_grows_the_delay_up_to_its_cap(
    settle: Callable[..., Any],
    envelope_for: Callable[..., Envelope],
    journal: Journal,
    manual_clock: ManualClock,
) -> None:
    started = manual_clock.now()

    result, attempts = settle(envelope_for(BacksOff))

    assert [attempt.retry_in for attempt in attempts[:-1]] == [2.0, 6.0, 10.0]
    assert manual_clock.now() - started == pytest.approx(18.0)
    assert len(journal.entries) == 4
    assert result.outcome is Outcome.FAILED


def test_a_job_that_succeeds_on_a_retry_is_done_and_not_failed(
    settle: Callable[..., Any],
    envelope_for: Callable[..., Envelope],
    journal: Journal,
    failed_store: Any,
) -> None:
    result, attempts = settle(envelope_for(Recovers))

    assert result.outcome is Outcome.DONE
    assert len(attempts) == 3
    assert journal.failures == []
    assert failed_store.failures == []


def test_a_plain_function_that_raises_runs_once_and_is_stored(
    settle: Callable[..., Any],
    envelope_for: Callable[..., Envelope],
    notes: Path,
    failed_store: Any,
) -> None:
    result, attempts = settle(envelope_for(explode, args=(str(notes),)))

    assert result.outcome is Outcome.FAILED
    assert len(attempts) == 1
    assert read_notes(notes) == ["explode ran"]
    assert failed_store.reasons == ["failed"]
    assert failed_store.failures[0].message == "a plain function failed"


def test_a_plain_class_runs_once_and_gets_no_failed_callback(
    settle: Callable[..., Any],
    envelope_for: Callable[..., Envelope],
    journal: Journal,
    failed_store: Any,
) -> None:
    result, _ = settle(envelope_for(PlainJob))

    assert result.outcome is Outcome.FAILED
    assert journal.entries == ["plain attempt"]
    assert journal.failures == []
    assert failed_store.reasons == ["failed"]


def test_a_job_that_cannot_be_built_fails_at_once_naming_the_missing_binding(
    settle: Callable[..., Any],
    envelope_for: Callable[..., Envelope],
    failed_store: Any,
) -> None:
    result, attempts = settle(envelope_for(NeedsUnbound))

    expected = "cannot build NeedsUnbound: parameter 'service: Unbound' has no binding"
    assert result.outcome is Outcome.FAILED
    assert len(attempts) == 1  # no retry can mend a missing binding
    assert expected in result.error_text
    assert failed_store.failures[0].message == expected
    assert "Traceback" in failed_store.failures[0].traceback


def test_a_missing_handle_argument_fails_at_once_naming_the_parameter(
    settle: Callable[..., Any],
    envelope_for: Callable[..., Envelope],
    journal: Journal,
) -> None:
    result, attempts = settle(envelope_for(Counted("x")))

    assert result.outcome is Outcome.FAILED
    assert len(attempts) == 1
    assert "parameter 'suffix: str' has no" in result.error_text
    assert journal.entries == []


def test_a_callback_that_does_not_exist_fails_at_once(
    settle: Callable[..., Any], envelope_for: Callable[..., Envelope], journal: Journal
) -> None:
    result, attempts = settle(envelope_for(AlwaysFails, callback="nosuch"))

    assert result.outcome is Outcome.FAILED
    assert len(attempts) == 1
    assert "has no method 'nosuch'" in result.error_text


def test_an_attribute_error_inside_handle_is_reported_as_itself(
    settle: Callable[..., Any],
    envelope_for: Callable[..., Envelope],
    failed_store: Any,
) -> None:
    result, _ = settle(envelope_for(TouchesMissingAttribute))

    assert result.outcome is Outcome.FAILED
    assert result.error_text.startswith("AttributeError:")
    assert "settings" in result.error_text
    assert "no method" not in result.error_text
    assert "self.settings.timeout" in result.traceback
    assert failed_store.failures[0].exception_type == "AttributeError"


def test_a_failed_callback_that_raises_is_logged_and_run_goes_on(
    settle: Callable[..., Any],
    envelope_for: Callable[..., Envelope],
    failed_store: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    envelope = envelope_for(FailedRaises)

    with caplog.at_level(logging.ERROR, logger="queueing.execution"):
        result, _ = settle(envelope)

    assert result.outcome is Outcome.FAILED
    assert result.error_text == "ValueError: the job failed"
    [record] = [r for r in caplog.records if "failed()" in r.getMessage()]
    assert envelope.id in record.getMessage()
    assert record.exc_info is not None
    assert "failed() broke too" in str(record.exc_info[1])
    assert failed_store.reasons == ["failed"]


def test_a_failing_store_is_logged_and_run_goes_on(
    container: Container,
    signer: Any,
    manual_clock: ManualClock,
    envelope_for: Callable[..., Envelope],
    notes: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BrokenStore:
        def store(self, failure: Any) -> None:
            raise OSError("disk full")

    runner = JobRunner(container, signer, BrokenStore(), manual_clock)
    envelope = envelope_for(explode, args=(str(notes),))

    result = runner.run_until_settled(envelope)

    assert result.outcome is Outcome.FAILED
    assert any(envelope.id in record.getMessage() for record in caplog.records)


# Waiting ----------------------------------------------------------------------------


def test_run_until_settled_sleeps_out_the_wait_first(
    runner: JobRunner,
    envelope_for: Callable[..., Envelope],
    manual_clock: ManualClock,
    notes: Path,
) -> None:
    started = manual_clock.now()

    runner.run_until_settled(envelope_for(note, args=(str(notes), "late"), delay=600))

    assert manual_clock.now() - started == pytest.approx(600)
    assert read_notes(notes) == ["late"]


def test_run_until_settled_runs_an_overdue_job_at_once(
    runner: JobRunner,
    envelope_for: Callable[..., Envelope],
    manual_clock: ManualClock,
    notes: Path,
) -> None:
    envelope = envelope_for(note, args=(str(notes), "overdue"))
    manual_clock.advance(60)  # the job has been due for a minute

    result = runner.run_until_settled(envelope)

    assert result.outcome is Outcome.DONE
    assert read_notes(notes) == ["overdue"]


# Jobs whose worker died ---------------------------------------------------------------


def test_a_job_whose_attempts_all_ended_with_its_worker_dying_is_failed_without_running(
    runner: JobRunner,
    envelope_for: Callable[..., Envelope],
    journal: Journal,
    failed_store: Any,
) -> None:
    # Three attempts counted and none reported back: the fourth reservation.
    envelope = replace(envelope_for(AlwaysFails, args=("a",)), attempts=4)

    result = runner.run(envelope)

    assert result.outcome is Outcome.FAILED
    assert journal.entries == []
    [(payload, error)] = journal.failures
    assert payload["ran"] == 3
    assert "worker died while running it" in str(error)
    [failure] = failed_store.failures
    assert failure.reason == "died"
    assert failure.envelope.attempts == 3
    assert "3 attempt(s) are used up" in failure.message


def test_a_job_with_an_attempt_left_after_its_worker_died_runs_again(
    runner: JobRunner, envelope_for: Callable[..., Envelope], journal: Journal
) -> None:
    envelope = replace(envelope_for(Report), attempts=3)

    result = runner.run(envelope)

    assert result.outcome is Outcome.DONE
    assert journal.entries == ["handle"]


def test_a_plain_function_that_killed_its_worker_once_is_not_run_again(
    runner: JobRunner,
    envelope_for: Callable[..., Envelope],
    notes: Path,
    failed_store: Any,
) -> None:
    envelope = replace(envelope_for(explode, args=(str(notes),)), attempts=2)

    result = runner.run(envelope)

    assert result.outcome is Outcome.FAILED
    assert read_notes(notes) == []
    [failure] = failed_store.failures
    assert (failure.reason, failure.exception_type) == ("died", "WorkerDiedError")


# Jobs that decide for themselves ------------------------------------------------------


class RetriesOnlyTimeouts(AlwaysFails):
    """Another attempt may mend a timeout, never a bad value."""

    retry_on = (TimeoutError,)

    def handle(self, *args: Any) -> None:
        self.journal.entries.append(("attempt", args))
        raise (TimeoutError if args == ("timeout",) else ValueError)(args[0])


class FailsOnValueErrors(AlwaysFails):
    """Retries anything but a ValueError."""

    fail_on = (ValueError,)

    def handle(self, *args: Any) -> None:
        self.journal.entries.append(("attempt", args))
        raise ValueError("the input is wrong")


class ReleasesUntilThird(AlwaysFails):
    """Asks to go back on the queue twice, then succeeds."""

    run_times = 1

    def handle(self, *args: Any) -> None:
        self.journal.entries.append(("attempt", args))
        if len(self.journal.entries) < 3:
            self.release("5 seconds")


class FailsItself(AlwaysFails):
    """Gives up at once with its own reason, however many attempts are left."""

    def handle(self, *args: Any) -> None:
        self.journal.entries.append(("attempt", args))
        self.fail("the account is closed")


class FailsItselfThenRaises(AlwaysFails):
    """Decides to fail, then raises something else."""

    def handle(self, *args: Any) -> None:
        self.journal.entries.append(("attempt", args))
        self.fail(PermissionError("no access"))
        raise RuntimeError("raised after deciding")


def test_retry_on_limits_retries_to_the_exceptions_it_names(
    settle: Callable[..., Any], envelope_for: Callable[..., Envelope], journal: Journal
) -> None:
    timeout, timeout_attempts = settle(envelope_for(RetriesOnlyTimeouts, args=("timeout",)))
    assert (timeout.outcome, len(timeout_attempts)) == (Outcome.FAILED, 3)

    journal.entries.clear()
    bad, bad_attempts = settle(envelope_for(RetriesOnlyTimeouts, args=("bad",)))
    assert (bad.outcome, len(bad_attempts)) == (Outcome.FAILED, 1)
    assert bad.error_text == "ValueError: bad"
    assert len(journal.failures) == 2


def test_fail_on_fails_at_once_on_the_exceptions_it_names(
    settle: Callable[..., Any], envelope_for: Callable[..., Envelope], journal: Journal
) -> None:
    result, attempts = settle(envelope_for(FailsOnValueErrors))

    assert (result.outcome, len(attempts)) == (Outcome.FAILED, 1)
    [(payload, error)] = journal.failures
    assert payload["ran"] == 1 and isinstance(error, ValueError)


def test_release_puts_the_job_back_after_its_delay_without_spending_the_attempt(
    settle: Callable[..., Any],
    envelope_for: Callable[..., Envelope],
    journal: Journal,
    manual_clock: ManualClock,
) -> None:
    begun = manual_clock.now()

    result, attempts = settle(envelope_for(ReleasesUntilThird))

    assert [attempt.outcome for attempt in attempts] == [
        Outcome.RELEASED,
        Outcome.RELEASED,
        Outcome.DONE,
    ]
    assert [attempt.envelope.attempts for attempt in attempts] == [1, 1, 1]
    assert attempts[0].retry_in == 5.0
    assert manual_clock.now() - begun == 10.0
    assert result.outcome is Outcome.DONE and journal.failures == []


def test_fail_from_handle_fails_now_and_calls_failed_once(
    settle: Callable[..., Any],
    envelope_for: Callable[..., Envelope],
    journal: Journal,
    failed_store: Any,
) -> None:
    result, attempts = settle(envelope_for(FailsItself))

    assert (result.outcome, len(attempts)) == (Outcome.FAILED, 1)
    [(_payload, error)] = journal.failures
    assert str(error) == "the account is closed"
    assert failed_store.failures[0].message == "the account is closed"


def test_a_decision_to_fail_holds_when_handle_raises_afterwards(
    settle: Callable[..., Any], envelope_for: Callable[..., Envelope], journal: Journal
) -> None:
    result, attempts = settle(envelope_for(FailsItselfThenRaises))

    assert (result.outcome, len(attempts)) == (Outcome.FAILED, 1)
    [(_payload, error)] = journal.failures
    assert isinstance(error, PermissionError)
