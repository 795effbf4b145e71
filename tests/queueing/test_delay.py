"""Reading `wait=`: every form a push accepts, and every form it refuses."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pendulum
import pytest

from queueing.delay import MAX_WAIT_SECONDS, job_delay, seconds_to_wait

NOW = pendulum.datetime(2030, 1, 1, 12, 0, 0, tz="UTC").timestamp()

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0


@pytest.mark.parametrize(
    ("wait", "seconds"),
    [
        ("10 minutes", 10 * MINUTE),
        ("30 seconds", 30.0),
        ("2 hours", 2 * HOUR),
        ("1 day", DAY),
        ("1 minute", MINUTE),
        ("1 second", 1.0),
        ("1 hour", HOUR),
        ("3 days", 3 * DAY),
        ("1 week", 7 * DAY),
        ("10 MINUTES", 10 * MINUTE),
        ("2 Hours", 2 * HOUR),
        ("1 Day", DAY),
        ("  5 minutes  ", 5 * MINUTE),
        ("10minutes", 10 * MINUTE),
        ("1.5 hours", 1.5 * HOUR),
        ("5 min", 5 * MINUTE),
        ("5 mins", 5 * MINUTE),
        ("45 secs", 45.0),
        ("0 seconds", 0.0),
    ],
)
def test_a_phrase_is_read_as_seconds(wait: str, seconds: float) -> None:
    assert seconds_to_wait(wait, NOW) == pytest.approx(seconds)


@pytest.mark.parametrize(("wait", "seconds"), [(0, 0.0), (30, 30.0), (2.5, 2.5), ("30", 30.0)])
def test_a_number_is_seconds(wait: Any, seconds: float) -> None:
    assert seconds_to_wait(wait, NOW) == seconds


def test_none_means_no_wait() -> None:
    assert seconds_to_wait(None, NOW) == 0.0


def test_a_timedelta_is_its_total_seconds() -> None:
    assert seconds_to_wait(dt.timedelta(minutes=10, seconds=5), NOW) == 605.0


def test_a_pendulum_duration_is_its_total_seconds() -> None:
    assert seconds_to_wait(pendulum.duration(hours=2), NOW) == 2 * HOUR


@pytest.mark.parametrize(
    ("wait", "seconds"), [("PT10M", 10 * MINUTE), ("P1D", DAY), ("PT1H30M", 90 * MINUTE)]
)
def test_an_iso_duration_is_read(wait: str, seconds: float) -> None:
    assert seconds_to_wait(wait, NOW) == seconds


def test_an_aware_datetime_waits_until_then() -> None:
    then = pendulum.from_timestamp(NOW, tz="Europe/Paris").add(minutes=10)

    assert seconds_to_wait(then, NOW) == pytest.approx(10 * MINUTE)


def test_an_aware_stdlib_datetime_waits_until_then() -> None:
    then = dt.datetime.fromtimestamp(NOW, dt.UTC) + dt.timedelta(hours=1)

    assert seconds_to_wait(then, NOW) == pytest.approx(HOUR)


def test_an_aware_datetime_in_the_past_means_now() -> None:
    then = pendulum.from_timestamp(NOW, tz="UTC").subtract(days=1)

    assert seconds_to_wait(then, NOW) == 0.0


def test_a_datetime_text_with_an_offset_waits_until_then() -> None:
    assert seconds_to_wait("2030-01-01T13:00:00+00:00", NOW) == pytest.approx(HOUR)


@pytest.mark.parametrize(
    "wait",
    [
        "soon",
        "ten minutes",
        "10 fortnights",
        "10 minutes ago",
        "",
        "minutes",
        "1 s",
        "inf",
        "2030-01-01T13:00:00",
        "2030-01-01",
    ],
)
def test_an_unreadable_text_is_refused_naming_it(wait: str) -> None:
    with pytest.raises(ValueError) as refused:
        seconds_to_wait(wait, NOW)

    assert repr(wait) in str(refused.value)


@pytest.mark.parametrize(
    "wait",
    [
        -1,
        -0.5,
        "-30",
        dt.timedelta(seconds=-1),
        pendulum.duration(minutes=-5),
    ],
)
def test_a_negative_wait_is_refused_naming_it(wait: Any) -> None:
    with pytest.raises(ValueError) as refused:
        seconds_to_wait(wait, NOW)

    assert repr(wait) in str(refused.value)


@pytest.mark.parametrize("wait", [float("nan"), float("inf")])
def test_an_endless_or_undefined_number_is_refused(wait: float) -> None:
    with pytest.raises(ValueError) as refused:
        seconds_to_wait(wait, NOW)

    assert repr(wait) in str(refused.value)


def test_a_naive_datetime_is_refused_naming_it() -> None:
    naive = dt.datetime(2030, 1, 1, 13, 0, 0)

    with pytest.raises(ValueError) as refused:
        seconds_to_wait(naive, NOW)

    assert repr(naive) in str(refused.value)
    assert "time zone" in str(refused.value)


@pytest.mark.parametrize("wait", [True, False])
def test_a_bool_is_refused_naming_it(wait: bool) -> None:
    with pytest.raises(ValueError) as refused:
        seconds_to_wait(wait, NOW)

    assert repr(wait) in str(refused.value)


@pytest.mark.parametrize("wait", [[10], {"minutes": 10}, object(), dt.date(2030, 1, 2), b"10"])
def test_a_value_of_another_type_is_refused_naming_it(wait: Any) -> None:
    with pytest.raises(ValueError) as refused:
        seconds_to_wait(wait, NOW)

    assert repr(wait) in str(refused.value)


def test_a_job_may_wait_up_to_49_days_and_no_longer() -> None:
    assert job_delay("49 days", 0.0) == MAX_WAIT_SECONDS == 49 * 86400

    with pytest.raises(ValueError) as refused:
        job_delay(10**12, 0.0)

    assert "the longest wait a job may have is 49 days" in str(refused.value)
