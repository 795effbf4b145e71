"""A fake queue for tests: it records pushes, asserts on them, and runs them on demand.

    with fake_queue(container) as fake:
        signup(container.make(Queue), "ada@example.com")
        fake.assert_pushed(SendWelcomeEmail, args=("ada@example.com",))
        fake.advance("10 minutes")
        fake.run_due()

Pushes are serialized and signed exactly as a real driver would, so a job
that cannot be pickled fails the test at push time. Time is a `ManualClock`:
delayed jobs and retries become due when the test advances the clock.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from container import Container
from queueing.clock import ManualClock
from queueing.delay import seconds_to_wait
from queueing.drivers.base import Driver
from queueing.execution import JobRunner, Result
from queueing.failed import FailedJobStore, LoggingFailedJobStore
from queueing.manager import Queue
from queueing.payload import Envelope, Signer, job_name


@dataclass
class PushedJob:
    """One recorded push: the envelope and what it carries, readable in assertions."""

    envelope: Envelope
    obj: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    callback: str
    channel: str | None
    pushed_at: float

    @property
    def driver(self) -> str:
        """The driver the job was pushed to."""
        return self.envelope.driver

    @property
    def queue(self) -> str:
        """The queue the job was pushed to."""
        return self.envelope.queue

    @property
    def delay(self) -> float:
        """Seconds between the push and when the job is due."""
        return self.envelope.available_at - self.pushed_at

    def matches(self, job: Any) -> bool:
        """Say whether this push is of `job` (a class, a callable or a dotted name)."""
        if isinstance(job, str):
            name = self.envelope.name
            # Nested names read `module:Class.method`: "Class.method" matches too.
            return name == job or name.endswith((f".{job}", f":{job}"))
        if self.obj is job:
            return True
        if isinstance(job, type):
            return isinstance(self.obj, job)
        # Closures and lambdas are pickled by value, so compare by name.
        return callable(job) and job_name(job) == self.envelope.name


class _RecordingDriver(Driver):
    """Stands in for every configured driver and records what reaches it."""

    def __init__(self, fake: QueueFake, name: str) -> None:
        self.fake = fake
        self.name = name

    def push(self, envelopes: Sequence[Envelope], channel: str | None = None) -> None:
        for envelope in envelopes:
            self.fake._record(envelope, channel)


class QueueFake(Queue):
    """A `Queue` that records pushes instead of sending them anywhere."""

    def __init__(
        self,
        container: Container | None = None,
        drivers: Sequence[str] = ("async", "sync", "database", "amqp"),
        default: str | None = None,
        signer: Signer | None = None,
        failed_store: FailedJobStore | None = None,
    ) -> None:
        self.clock: ManualClock = ManualClock()
        signer = signer or Signer(secrets.token_bytes(32))
        names = list(drivers)
        factories: dict[str, Callable[[], Driver]] = {
            name: functools.partial(_RecordingDriver, self, name) for name in names
        }
        super().__init__(
            factories,
            default or names[0],
            signer,
            self.clock,
        )
        self.container = container or Container()
        self.runner = JobRunner(
            self.container,
            signer,
            failed_store or _bound_or(self.container, FailedJobStore, LoggingFailedJobStore()),
            self.clock,
        )
        self.jobs: list[PushedJob] = []
        self.results: list[Result] = []
        self._waiting: list[Envelope] = []

    def _record(self, envelope: Envelope, channel: str | None) -> None:
        job = self.signer.load(envelope.body)
        self.jobs.append(
            PushedJob(
                envelope,
                job["obj"],
                job["args"],
                job["kwargs"],
                job["callback"],
                channel,
                self.clock.now(),
            )
        )
        self._waiting.append(envelope)

    # Queries and assertions --------------------------------------------------------

    def pushed(self, job: Any = None, **where: Any) -> list[PushedJob]:
        """Return the recorded pushes of `job` (all when None) matching `where`.

        `where` may hold `args`, `kwargs`, `channel`, `queue`, `driver` and
        `callback`, each compared for equality (`args` as a tuple).
        """
        found = [pushed for pushed in self.jobs if job is None or pushed.matches(job)]
        for field_name, expected in where.items():
            if expected is None:
                continue
            if field_name == "args":
                expected = tuple(expected)
            found = [pushed for pushed in found if getattr(pushed, field_name) == expected]
        return found

    def assert_pushed(self, job: Any, times: int | None = None, **where: Any) -> None:
        """Assert `job` was pushed (exactly `times` times when given), matching `where`."""
        found = self.pushed(job, **where)
        condition = f" with {where}" if any(v is not None for v in where.values()) else ""
        if times is None and not found:
            raise AssertionError(f"{_label(job)} was not pushed{condition}; {self._summary()}")
        if times is not None and len(found) != times:
            raise AssertionError(
                f"{_label(job)} was pushed {len(found)} time(s){condition}, "
                f"expected {times}; {self._summary()}"
            )

    def assert_not_pushed(self, job: Any, **where: Any) -> None:
        """Assert `job` was never pushed (matching `where`)."""
        found = self.pushed(job, **where)
        if found:
            raise AssertionError(f"{_label(job)} was pushed {len(found)} time(s), expected none")

    def assert_nothing_pushed(self) -> None:
        """Assert no job at all was pushed."""
        if self.jobs:
            raise AssertionError(f"expected no pushes; {self._summary()}")

    def assert_pushed_count(self, count: int) -> None:
        """Assert exactly `count` jobs were pushed in all."""
        if len(self.jobs) != count:
            raise AssertionError(f"expected {count} push(es); {self._summary()}")

    def _summary(self) -> str:
        if not self.jobs:
            return "nothing was pushed"
        names = ", ".join(pushed.envelope.name for pushed in self.jobs)
        return f"pushed: {names}"

    # Time and running --------------------------------------------------------------

    def advance(self, wait: Any) -> None:
        """Move the fake clock forward by `wait` (anything `push(wait=...)` accepts)."""
        self.clock.advance(seconds_to_wait(wait, self.clock.now()))

    def due(self) -> list[Envelope]:
        """Return the recorded jobs (and retries) that are due on the fake clock."""
        now = self.clock.now()
        return [envelope for envelope in self._waiting if envelope.available_at <= now]

    def run_due(self) -> list[Result]:
        """Run every due job once per attempt until nothing more is due; return the results.

        A retry is scheduled on the fake clock; it runs here too when its delay
        is zero, otherwise after `advance`.
        """
        results: list[Result] = []
        while due := sorted(self.due(), key=lambda envelope: envelope.available_at):
            for envelope in due:
                self._waiting.remove(envelope)
                result = self.runner.run(envelope.started())
                again = result.again(self.clock.now())
                if again is not None:
                    self._waiting.append(again)
                results.append(result)
        self.results.extend(results)
        return results

    def run_all(self) -> list[Result]:
        """Run everything recorded, advancing the clock past waits and retry delays."""
        results: list[Result] = []
        while self._waiting:
            earliest = min(envelope.available_at for envelope in self._waiting)
            self.clock.advance(max(0.0, earliest - self.clock.now()))
            results.extend(self.run_due())
        return results


@contextmanager
def fake_queue(container: Container, **options: Any) -> Iterator[QueueFake]:
    """Swap the container's `Queue` for a `QueueFake` inside the block."""
    fake = QueueFake(container, **options)
    with container.swap(Queue, fake):
        yield fake


def _bound_or(container: Container, key: Any, default: Any) -> Any:
    return container.make(key) if container.has(key) else default


def _label(job: Any) -> str:
    return job if isinstance(job, str) else getattr(job, "__qualname__", repr(job))
