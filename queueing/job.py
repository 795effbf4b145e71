"""`Queueable`, the base class of every job."""

from __future__ import annotations

from typing import Any


class Queueable:
    """Base class for jobs: a class with a `handle(...)` method.

    Class attributes set the retry policy, and a job may override any of them:

    * `run_times`: attempts in all before the job counts as failed (default 3),
    * `run_again_on_fail`: `False` means a single attempt,
    * `retry_delay`: seconds between attempts (default 1),
    * `backoff`: factor applied to the delay after each attempt (default 1, so
      the delay stays the same; 2 doubles it each time),
    * `max_retry_delay`: an upper bound on the delay, in seconds.
    """

    run_times: int = 3
    run_again_on_fail: bool = True
    retry_delay: float = 1.0
    backoff: float = 1.0
    max_retry_delay: float | None = None

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
        return max(0.0, delay)

    def failed(self, payload: dict[str, Any], error: BaseException) -> None:
        """Called once when the job has used all its attempts.

        `payload` is the dict described in the README (`obj`, `args`,
        `callback`, `created`, `ran`, ...); `error` is the last exception.
        The default does nothing: the worker already logs and stores the
        failure.
        """


def retry_policy(obj: Any) -> Queueable | None:
    """Return the `Queueable` whose policy governs `obj`, or None for plain callables."""
    if isinstance(obj, Queueable):
        return obj
    if isinstance(obj, type) and issubclass(obj, Queueable):
        return obj.__new__(obj)
    return None
