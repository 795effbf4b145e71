"""`Queueable`, the base class of every job."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from queueing.delay import MAX_WAIT_SECONDS, job_delay


class Queueable:
    """Base class for jobs: a class with a `handle(...)` method.

    Class attributes set the retry policy, and a job may override any of them:

    * `run_times`: attempts in all before the job counts as failed (default 3),
    * `run_again_on_fail`: `False` means a single attempt,
    * `retry_delay`: seconds between attempts (default 1),
    * `backoff`: factor applied to the delay after each attempt (default 1, so
      the delay stays the same; 2 doubles it each time),
    * `max_retry_delay`: an upper bound on the delay, in seconds,
    * `retry_on`: the exceptions worth another attempt (default: any
      `Exception`); anything else fails the job at once,
    * `fail_on`: exceptions that fail the job at once even when `retry_on`
      covers them.

    From inside `handle` a job may decide for itself: `self.release(delay)`
    puts it back on its queue without spending the attempt, and
    `self.fail(error)` fails it now, `failed()` called once. The decision
    holds even if `handle` raises afterwards.
    """

    run_times: int = 3
    run_again_on_fail: bool = True
    retry_delay: float = 1.0
    backoff: float = 1.0
    max_retry_delay: float | None = None
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    fail_on: tuple[type[BaseException], ...] = ()
    # What `release` or `fail` decided during the attempt in hand.
    _decision: Release | Fail | None = None

    def attempts_allowed(self) -> int:
        """Return how many attempts this job gets in all."""
        if not self.run_again_on_fail:
            return 1
        return max(1, int(self.run_times))

    def delay_before_retry(self, attempt: int) -> float:
        """Return the seconds to wait after attempt number `attempt` (1-based) failed."""
        delay = float(self.retry_delay) * float(self.backoff) ** max(0, attempt - 1)
        if self.max_retry_delay is not None:
            delay = min(delay, float(self.max_retry_delay))
        return min(max(0.0, delay), MAX_WAIT_SECONDS)

    def retries(self, error: BaseException) -> bool:
        """Say whether `error` is worth another attempt (attempts left aside)."""
        return isinstance(error, self.retry_on) and not isinstance(error, self.fail_on)

    def release(self, delay: Any = 0) -> None:
        """Put this job back on its queue once `handle` returns, due after `delay`.

        The attempt is not spent. `delay` is read like `wait=`: seconds, "10
        minutes", a timedelta or an aware datetime.
        """
        self._decision = Release(job_delay(delay, time.time()))

    def fail(self, error: BaseException | str | None = None) -> None:
        """Fail this job once `handle` returns, whatever attempts it has left."""
        if not isinstance(error, BaseException):
            error = JobFailedByItself(error or f"{type(self).__qualname__} failed itself")
        self._decision = Fail(error)

    def failed(self, payload: dict[str, Any], error: BaseException) -> None:
        """Called once when the job has used all its attempts.

        `payload` is the dict described in the README (`obj`, `args`,
        `callback`, `created`, `ran`, ...); `error` is the last exception.
        The default does nothing: the worker already logs and stores the
        failure.
        """


class JobFailedByItself(RuntimeError):
    """The error a job's `fail("reason")` records when it gives no exception."""


@dataclass(frozen=True)
class Release:
    """A job asked to go back on its queue, `delay` seconds from now."""

    delay: float


@dataclass(frozen=True)
class Fail:
    """A job asked to be failed now, with `error`."""

    error: BaseException


def take_decision(job: Any) -> Release | Fail | None:
    """Return and clear what the job decided during its attempt, if anything."""
    decision = getattr(job, "_decision", None)
    if decision is not None:
        job._decision = None
    return decision


def retry_policy(obj: Any) -> Queueable | None:
    """Return the `Queueable` whose policy governs `obj`, or None for plain callables."""
    if isinstance(obj, Queueable):
        return obj
    if isinstance(obj, type) and issubclass(obj, Queueable):
        return obj.__new__(obj)
    return None
