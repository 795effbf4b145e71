"""Reading `wait=` values: how long a job waits before it may run."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

import pendulum

_UNITS = {
    "second": "seconds",
    "sec": "seconds",
    "minute": "minutes",
    "min": "minutes",
    "hour": "hours",
    "day": "days",
    "week": "weeks",
}
# The longest wait any driver holds: RabbitMQ's holding queues keep a message
# at most 2**32 - 1 ms (about 49.7 days, `x-message-ttl` and `x-expires`).
# Every driver refuses a longer `wait=` alike, at push.
MAX_WAIT_SECONDS = 49 * 24 * 3600.0

_PHRASE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+?)s?\s*$", re.IGNORECASE)


def seconds_to_wait(value: Any, now: float) -> float:
    """Return how many seconds from `now` (epoch seconds) `value` asks to wait.

    Accepted: None (no wait), a number of seconds, a phrase such as
    "10 minutes", "1 day" or "30 seconds" (singular or plural, any case), an
    ISO-8601 duration ("PT10M"), a `timedelta` or pendulum duration, or an
    aware datetime (a time already past means "now"). Anything else, a
    negative wait or a naive datetime raises `ValueError` naming the value.
    """
    if value is None:
        return 0.0
    if isinstance(value, bool):
        raise ValueError(f"cannot read wait={value!r}: give seconds, a phrase or a datetime")
    if isinstance(value, int | float):
        return _not_negative(float(value), value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            raise ValueError(
                f"cannot read wait={value!r}: the datetime has no time zone; "
                "give an aware datetime such as pendulum.now().add(minutes=5)"
            )
        return max(0.0, value.timestamp() - now)
    if isinstance(value, dt.timedelta):
        return _not_negative(value.total_seconds(), value)
    if isinstance(value, str):
        return _not_negative(_parse_text(value, now), value)
    raise ValueError(
        f"cannot read wait={value!r}: give seconds, a phrase like '10 minutes', "
        "a timedelta or an aware datetime"
    )


def job_delay(value: Any, now: float) -> float:
    """`seconds_to_wait(value, now)` for a job, refused past `MAX_WAIT_SECONDS`.

    Raises `ValueError` naming the maximum, so nothing is queued that some
    driver could not hold (run a scheduler that pushes later instead).
    """
    seconds = seconds_to_wait(value, now)
    if seconds > MAX_WAIT_SECONDS:
        raise ValueError(
            f"cannot wait {seconds:,.0f} seconds (wait={value!r}): the longest wait a job may "
            f"have is {MAX_WAIT_SECONDS / 86400:g} days ({MAX_WAIT_SECONDS:,.0f} seconds), "
            "the most RabbitMQ holds; push it later from a scheduler instead"
        )
    return seconds


def _parse_text(text: str, now: float) -> float:
    match = _PHRASE.match(text)
    if match:
        amount, unit = float(match.group(1)), match.group(2).lower()
        if unit in _UNITS:
            return pendulum.duration(**{_UNITS[unit]: amount}).total_seconds()
    if text.strip().lstrip("-").replace(".", "", 1).isdigit():
        return float(text)
    try:
        parsed = pendulum.parse(text.strip(), strict=True)
    except (ValueError, pendulum.parsing.exceptions.ParserError, TypeError):
        parsed = None
    if isinstance(parsed, dt.timedelta):
        return parsed.total_seconds()
    if isinstance(parsed, dt.datetime) and re.search(r"(Z|[+-]\d\d:?\d\d)$", text.strip()):
        return max(0.0, parsed.timestamp() - now)
    raise ValueError(
        f"cannot read wait={text!r}: expected a phrase such as '10 minutes', '30 seconds', "
        "'2 hours' or '1 day', an ISO-8601 duration, or a datetime with an offset"
    )


def _not_negative(seconds: float, original: Any) -> float:
    if not math.isfinite(seconds):
        raise ValueError(f"cannot wait an endless or undefined time: wait={original!r}")
    if seconds < 0:
        raise ValueError(f"cannot wait a negative time: wait={original!r}")
    return seconds
