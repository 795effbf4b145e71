"""The worker: takes jobs from a driver, runs them, and settles each one.

This is the one place where worker policy lives: leases kept alive while a
job runs, `--timeout`, stopping on SIGTERM/SIGINT, reconnecting with backoff
when the broker or database goes away, and the line printed per job. What to
do after an attempt (done, retry, fail) is the runner's decision; the worker
carries it out with the driver's acknowledge / release / bury.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from queueing.drivers.base import DriverUnavailableError
from queueing.execution import (
    CANNOT_SUCCEED,
    JobRunner,
    Outcome,
    Result,
    ShuttingDown,
    TimedOut,
)
from queueing.payload import Envelope
from queueing.reporting import result_line, short_name

logger = logging.getLogger("queueing.worker")

MAX_BACKOFF = 30.0


class Held(Protocol):
    """A job a worker holds, as a driver hands it out."""

    @property
    def envelope(self) -> Envelope:
        """The job, with `attempts` counting the one about to run."""
        ...


class ReservingDriver(Protocol):
    """What a driver offers workers: take a job, then settle it."""

    name: str

    def reserve(self, queues: Sequence[str], channel: str | None = None) -> Any | None:
        """Take the next due job of the first queue that has one, or None."""
        ...

    def acknowledge(self, held: Any) -> bool:
        """The job is done: remove it."""
        ...

    def release(self, held: Any, delay: float = 0.0, count_attempt: bool = True) -> bool:
        """Put the job back, due in `delay` seconds."""
        ...

    def bury(self, held: Any) -> bool:
        """The job failed for good and is stored: remove it."""
        ...


@dataclass
class WorkerOptions:
    """How a worker runs; each field is a `craft queue:work` option."""

    queues: list[str] = field(default_factory=lambda: ["default"])
    channel: str | None = None
    # Exit once the queues hold nothing left to run, delayed jobs and retries
    # included (jobs other workers hold do not count).
    stop_when_empty: bool = False
    max_jobs: int | None = None
    max_time: float | None = None
    timeout: float | None = None
    sleep: float = 1.0
    grace: float = 30.0
    quiet: bool = False


class Worker:
    """Runs jobs from one driver until told to stop."""

    def __init__(
        self,
        driver: ReservingDriver,
        runner: JobRunner,
        options: WorkerOptions,
        output: Callable[[str], None] | None = None,
        errors: Callable[[str], None] | None = None,
    ) -> None:
        self.driver = driver
        self.runner = runner
        self.options = options
        self.output = output or (lambda line: print(line, flush=True))
        self.errors = errors or (lambda line: print(line, file=sys.stderr, flush=True))
        self.processed = 0
        self._stopping = False
        self._wake = threading.Event()
        self._in_job = False
        self._timeout_at: float | None = None
        self._grace_at: float | None = None
        self._backoff = 0.0
        self._lease_keeper: _LeaseKeeper | None = None

    # Running ----------------------------------------------------------------------

    def run(self) -> int:
        """Work until stopped, empty (with `stop_when_empty`) or a limit is reached."""
        self.runner.signer.require_key()
        restore = self._install_signals()
        self._lease_keeper = _LeaseKeeper.for_driver(self.driver)
        started = time.monotonic()
        try:
            while not self._stopping:
                if self.options.max_jobs is not None and self.processed >= self.options.max_jobs:
                    break
                if (
                    self.options.max_time is not None
                    and time.monotonic() - started >= self.options.max_time
                ):
                    break
                held = self._reserve()
                if held is None:
                    if self.options.stop_when_empty and self._backoff == 0 and self._empty():
                        break
                    self._idle()
                    continue
                self._process(held)
        finally:
            if self._lease_keeper is not None:
                self._lease_keeper.stop()
            self._give_back_unstarted()
            restore()
        return 0

    def _give_back_unstarted(self) -> None:
        """Hand back jobs a prefetching driver reserved ahead, so no attempt of theirs is spent."""
        release_unstarted = getattr(self.driver, "release_unstarted", None)
        if release_unstarted is None:
            return
        try:
            release_unstarted()
        except DriverUnavailableError as error:
            self.errors(f"could not give back the jobs reserved ahead: {error}")

    def stop(self) -> None:
        """Ask the worker to stop after the job in hand."""
        self._stopping = True
        self._wake.set()

    def _reserve(self) -> Any | None:
        try:
            held = self.driver.reserve(self.options.queues, self.options.channel)
        except DriverUnavailableError as error:
            self._unavailable(error)
            return None
        if self._backoff:
            self.errors(f"{self.driver.name} reachable again")
        self._backoff = 0.0
        return held

    def _unavailable(self, error: DriverUnavailableError) -> None:
        """Report a lost server and wait longer before each next try, up to `MAX_BACKOFF`."""
        self._backoff = min(MAX_BACKOFF, max(1.0, self._backoff * 2))
        self.errors(f"{self.driver.name} unavailable, retrying in {self._backoff:g}s: {error}")

    def _empty(self) -> bool:
        """Say whether nothing is left to run: no due, delayed or retrying job."""
        waiting = getattr(self.driver, "waiting", None)
        try:
            return waiting is None or not waiting(self.options.queues, self.options.channel)
        except DriverUnavailableError:
            return False

    def _idle(self) -> None:
        """Wait for a job; a server lost meanwhile is reported and waited out, never fatal."""
        waiter = getattr(self.driver, "wait_for_jobs", None)
        if waiter is not None and not self._backoff:
            try:
                waiter(self.options.queues, self.options.channel, self.options.sleep, self._wake)
            except DriverUnavailableError as error:
                self._unavailable(error)
        if self._backoff:
            self._wake.wait(self._backoff)
        elif waiter is None:
            self._wake.wait(self.options.sleep)
        self._wake.clear()

    def _process(self, held: Any) -> None:
        envelope: Envelope = held.envelope
        keeper = self._lease_keeper
        if keeper is not None:
            keeper.keep(held)
        try:
            result = self._attempt(envelope)
        except ShuttingDown:
            result = None
        finally:
            if keeper is not None:
                keeper.forget()
        if result is None:
            self._settle(lambda: self.driver.release(held, 0.0, count_attempt=False))
            self.output(
                f"{_stamp()}  {short_name(envelope.name)}  {envelope.id[:12]}  {envelope.queue}  "
                "released (worker stopping)"
            )
            return
        if result.outcome is Outcome.DONE:
            self._settle(lambda: self.driver.acknowledge(held))
        elif result.outcome is Outcome.RETRY:
            self._settle(lambda: self.driver.release(held, result.retry_in))
        elif result.outcome is Outcome.RELEASED:
            self._settle(lambda: self.driver.release(held, result.retry_in, count_attempt=False))
        else:
            self._settle(lambda: self.driver.bury(held))
            self.errors(f"job {envelope.id} {result.outcome}: {result.error_text}")
            # A job that cannot be built or called gets one line: its traceback
            # shows only our own frames, and failed_jobs keeps it anyway.
            cannot_succeed = isinstance(result.error, CANNOT_SUCCEED)
            if result.traceback and not self.options.quiet and not cannot_succeed:
                self.errors(result.traceback.rstrip())
        self.processed += 1
        if not self.options.quiet:
            self.output(result_line(result))

    def _attempt(self, envelope: Envelope) -> Result:
        """Run one attempt under the timeout and the shutdown grace."""
        if self.options.timeout:
            self._timeout_at = time.monotonic() + self.options.timeout
        self._in_job = True
        self._arm()
        try:
            return self.runner.run(envelope)
        finally:
            self._in_job = False
            self._timeout_at = None
            self._disarm()

    def _settle(self, action: Callable[[], bool]) -> None:
        """Carry out acknowledge/release/bury, retrying until the driver answers."""
        delay = 1.0
        while True:
            try:
                if not action():
                    logger.warning("the job's lease had been lost; another worker may run it")
                return
            except DriverUnavailableError as error:
                if not error.retryable:
                    # Asking again gets the same answer; the driver hands the
                    # job out again (amqp: when this worker's connection closes).
                    self.errors(f"{self.driver.name} refused to settle the job: {error}")
                    return
                if self._grace_at is not None and time.monotonic() > self._grace_at:
                    self.errors(f"giving up settling the job while stopping: {error}")
                    return
                self.errors(f"{self.driver.name} unavailable, settling again in {delay:g}s")
                time.sleep(delay)
                delay = min(MAX_BACKOFF, delay * 2)

    # Signals ----------------------------------------------------------------------

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            if self.options.timeout:
                logger.warning("--timeout needs the main thread; jobs will not be timed out")
            return lambda: None
        previous = {
            number: signal.signal(number, self._on_stop_signal)
            for number in (signal.SIGTERM, signal.SIGINT)
        }
        previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._on_alarm)

        def restore() -> None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            for number, handler in previous.items():
                signal.signal(number, handler)

        return restore

    def _on_stop_signal(self, number: int, _frame: Any) -> None:
        if self._stopping:
            self.errors(f"second {signal.Signals(number).name}: exiting now")
            sys.stdout.flush()
            os._exit(1)
        self.errors(
            f"{signal.Signals(number).name} received: stopping after the job in hand "
            f"(up to {self.options.grace:g}s)"
        )
        self._grace_at = time.monotonic() + self.options.grace
        self.stop()
        if self._in_job:
            self._arm()

    def _on_alarm(self, _number: int, _frame: Any) -> None:
        if not self._in_job:
            return
        now = time.monotonic()
        if self._grace_at is not None and now >= self._grace_at:
            raise ShuttingDown(
                f"the worker is stopping and the {self.options.grace:g}s grace ended"
            )
        if self._timeout_at is not None and now >= self._timeout_at:
            raise TimedOut(f"job timed out after {self.options.timeout:g}s")
        self._arm()

    def _arm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        deadlines = [at for at in (self._timeout_at, self._grace_at) if at is not None]
        if deadlines:
            signal.setitimer(signal.ITIMER_REAL, max(0.001, min(deadlines) - time.monotonic()))

    def _disarm(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.setitimer(signal.ITIMER_REAL, 0)


class _LeaseKeeper:
    """Extends the lease of the job in hand, for drivers that lease (`extend`).

    One thread per worker, started with its first job, so that a job costs
    only a field set and cleared under a lock. The lock is also held around
    each `extend`, so forgetting a job waits for an extension of it that is
    under way: a job is never extended once the worker goes on to settle it.
    """

    def __init__(self, extend: Callable[[Any], bool], every: float) -> None:
        self._extend = extend
        self._every = every
        self._lock = threading.Lock()
        self._held: Any | None = None
        self._due = 0.0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_driver(cls, driver: Any) -> _LeaseKeeper | None:
        """Return a keeper for `driver`, or None if its jobs hold no lease to extend.

        A driver that wants `extend` called while a job runs says how often,
        in seconds, with `extend_every`.
        """
        extend = getattr(driver, "extend", None)
        every = getattr(driver, "extend_every", None)
        if extend is None or not every:
            return None
        return cls(extend, every)

    def keep(self, held: Any) -> None:
        """Extend `held`'s lease every period from now on, until `forget`."""
        with self._lock:
            self._held = held
            self._due = time.monotonic() + self._every
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="queue-lease", daemon=True)
            self._thread.start()

    def forget(self) -> None:
        """Stop extending the job in hand, once an extension under way has ended."""
        with self._lock:
            self._held = None

    def stop(self) -> None:
        """End the thread; a later `keep` starts a new one."""
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join()
        self._thread = None
        self._stopping.clear()

    def _run(self) -> None:
        wait = self._every
        while not self._stopping.wait(wait):
            wait = self._extend_if_due()

    def _extend_if_due(self) -> float:
        """Extend the job in hand if its period is up; return how long to sleep."""
        with self._lock:
            held = self._held
            if held is None:
                # A job handed over meanwhile is due a full period after it
                # started, so this sleep never makes its extension late.
                return self._every
            wait = self._due - time.monotonic()
            if wait > 0:
                return wait
            self._due = time.monotonic() + self._every
            try:
                if not self._extend(held):
                    logger.warning("lost the lease of job %s", held.envelope.id)
                    self._held = None
            except Exception as error:
                logger.warning("could not extend the lease of job %s: %s", held.envelope.id, error)
            return self._every


def _stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")
