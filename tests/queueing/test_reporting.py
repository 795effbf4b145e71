"""The worker's line format: names, durations, outcomes and colour."""

from __future__ import annotations

import io

import pytest

from queueing import Envelope
from queueing.execution import Outcome, Result
from queueing.reporting import (
    LineFormat,
    Tally,
    outcome_text,
    readable_duration,
    readable_wait,
    short_name,
    use_colour,
)


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def envelope(name: str = "app.jobs.Report.Report", queue: str = "default") -> Envelope:
    """An envelope as a worker would hold it on its second attempt."""
    return Envelope("5b1b58355a0e4d7f", name, queue, "database", "", 0.0, b"", attempts=2)


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("app.jobs.SendWelcomeEmail.SendWelcomeEmail", "SendWelcomeEmail"),
        ("app.examples.notify_slack", "notify_slack"),
        ("app.jobs.reports:Report.send", "Report.send"),
        (
            "app.jobs.reports:build.<locals>.<lambda>",
            "app.jobs.reports:build.<locals>.<lambda>",
        ),
        ("app.jobs.reports:build.<locals>.notify", "app.jobs.reports:build.<locals>.notify"),
    ],
)
def test_a_job_is_shown_by_the_name_a_reader_recognises(name: str, shown: str) -> None:
    assert short_name(name) == shown


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0004, "0.4 ms"),
        (0.012, "12 ms"),
        (0.9994, "999 ms"),
        (0.9996, "1.0 s"),
        (4.0, "4.0 s"),
        (59.9, "59.9 s"),
        (125, "2 min 05 s"),
        (3720, "1 h 02 min"),
    ],
)
def test_durations_read_in_the_unit_that_fits(seconds: float, text: str) -> None:
    assert readable_duration(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.25, "250 ms"),
        (1, "1 s"),
        (1.5, "1.5 s"),
        (600, "10 min"),
        (150, "2 min 30 s"),
        (9000, "2 h 30 min"),
        (3 * 86400, "3 d"),
    ],
)
def test_waits_read_in_the_unit_that_fits(seconds: float, text: str) -> None:
    assert readable_wait(seconds) == text


def test_outcomes_say_what_became_of_the_attempt() -> None:
    job = envelope()

    assert outcome_text(Result(job, Outcome.DONE, 0.1)) == "done"
    assert outcome_text(Result(job, Outcome.RETRY, 0.1, retry_in=1)).startswith("retry ")
    assert outcome_text(Result(job, Outcome.RETRY, 0.1, retry_in=1)).endswith(" in 1 s")
    assert outcome_text(Result(job, Outcome.FAILED, 0.1)).startswith("failed ")
    assert outcome_text(Result(job, Outcome.PARKED, 0.1)) == "parked"
    assert outcome_text(Result(job, Outcome.RELEASED, 0.1, retry_in=30)) == "released in 30 s"


def test_the_summary_counts_each_outcome_and_the_wall_time() -> None:
    tally = Tally()
    for outcome in (Outcome.DONE, Outcome.DONE, Outcome.RETRY, Outcome.FAILED, Outcome.PARKED):
        tally.count(outcome)

    line = LineFormat(process="worker 3").summary(tally, 62.0)

    assert line.endswith(
        "  worker 3  stopped after 1 min 02 s: 5 processed, 2 done, 1 failed, 1 retried, 1 parked"
    )


def test_colour_is_for_terminals_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_colour(Terminal()) is True
    assert use_colour(io.StringIO()) is False

    monkeypatch.setenv("NO_COLOR", "1")
    assert use_colour(Terminal()) is False


def test_a_coloured_line_keeps_its_columns_aligned() -> None:
    plain = LineFormat(["default"]).result(Result(envelope(), Outcome.DONE, 0.012))
    coloured = LineFormat(["default"], colour=True).result(Result(envelope(), Outcome.DONE, 0.012))

    assert "\x1b[" in coloured
    assert coloured.replace("\x1b[32m", "").replace("\x1b[2m", "").replace("\x1b[0m", "") == plain
