"""The worker: takes jobs from a driver, runs them, and settles each one.

This is the one place where worker policy lives: leases kept alive while a
job runs, `--timeout`, stopping on SIGTERM/SIGINT, reconnecting with backoff
when the broker or database goes away, and the lines it prints (one per job,
"still running" every `still_running_every` seconds of a long job, and a
summary when it exits; `queueing.reporting` formats them). What to
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
    Prepared,
    Result,
    ShuttingDown,
    TimedOut,
)
from queueing.job_loop import JobLoop
from queueing.leases import LeaseKeeper
from queueing.payload import Envelope
from queueing.reporting import LineFormat, Tally, parked_line, use_colour
from queueing.still_running import StillRunning

logger = logging.getLogger("queueing.worker")

MAX_BACKOFF = 30.0
# How often a worker with async jobs in flight looks for new jobs when none was due.
ASYNC_POLL_SECONDS = 0.05
# How long cancelled async jobs get to end before the worker exits without them.
CANCEL_WAIT_SECONDS = 10.0


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
    # Seconds between the "still running" lines of a long job.
    still_running_every: float = 60.0
    # Names this process in every line (`worker 2` under `--concurrency`).
    process: str | None = None
    # Async jobs in flight at once on the worker's event loop (0: run them one
    # at a time like sync jobs).
    async_concurrency: int = 10


class Worker:
    """Runs jobs from one driver until told to stop."""

    def __init__(
        self,
        driver: ReservingDriver,
        runner: JobRunner,
        options: WorkerOptions,
        output: Callable[[str], None] | None = None,
        errors: Callable[[str], None] | None = None,
        colour: bool | None = None,
    ) -> None:
        """`colour` None: colour the lines when printing them to stdout on a terminal."""
        self.driver = driver
        self.runner = runner
        self.options = options
        self.output = output or (lambda line: print(line, flush=True))
        self.errors = errors or (lambda line: print(line, file=sys.stderr, flush=True))
        if colour is None:
            colour = output is None and use_colour(sys.stdout)
        self.lines = LineFormat(options.queues, options.process, colour)
        self.tally = Tally()
        self.processed = 0
        self._stopping = False
        self._wake = threading.Event()
        self._in_job = False
        self._timeout_at: float | None = None
        self._grace_at: float | None = None
        self._backoff = 0.0
        self._lease_keeper: LeaseKeeper | None = None
        self._watch: StillRunning | None = None
        self._jobs: JobLoop | None = None
        self._armed = False
        self._async_started: dict[int, float] = {}

    # Running ----------------------------------------------------------------------

    def run(self) -> int:
        """Work until stopped, empty (with `stop_when_empty`) or a limit is reached."""
        self.runner.signer.require_key()
        restore = self._install_signals()
        self._lease_keeper = LeaseKeeper.for_driver(self.driver)
        if not self.options.quiet:
            self._watch = StillRunning(self.options.still_running_every, self._still_running)
        started = time.monotonic()
        try:
            while not self._stopping:
                self._settle_async()
                taken = self.processed + self._running_async()
                if self.options.max_jobs is not None and taken >= self.options.max_jobs:
                    break
                if (
                    self.options.max_time is not None
                    and time.monotonic() - started >= self.options.max_time
                ):
                    break
                if self._jobs is not None and self._jobs.full():
                    self._settle_async(wait=self.options.sleep)
                    continue
                held = self._reserve()
                if held is None:
                    if self._running_async():
                        # New jobs are looked for again soon; finished ones settle at once.
                        self._settle_async(wait=min(self.options.sleep, ASYNC_POLL_SECONDS))
                        continue
                    if self.options.stop_when_empty and self._backoff == 0 and self._empty():
                        break
                    self._idle()
                    continue
                self._process(held)
        finally:
            self._finish_async()
            if self._lease_keeper is not None:
                self._lease_keeper.stop()
            if self._watch is not None:
                self._watch.stop()
            self._give_back_unstarted()
            restore()
            if not self.options.quiet:
                self.output(self.lines.summary(self.tally, time.monotonic() - started))
        return 0

    def _still_running(self, envelope: Envelope, elapsed: float) -> None:
        self.output(self.lines.still_running(envelope, elapsed))

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
        started = time.monotonic()
        prepared = self.runner.prepare(envelope)
        if isinstance(prepared, Prepared) and prepared.is_async and self.options.async_concurrency:
            self._start_async(held, prepared)
            return
        if keeper is not None:
            keeper.keep(held)
        if self._watch is not None:
            self._watch.watch(envelope)
        try:
            result = self._attempt(prepared)
        except ShuttingDown:
            result = None
        finally:
            if keeper is not None:
                keeper.forget(held)
            if self._watch is not None:
                self._watch.forget()
        self._conclude(held, result, started)

    def _conclude(self, held: Any, result: Result | None, started: float) -> None:
        """Settle the attempt with the driver, and print its line."""
        envelope: Envelope = held.envelope
        if result is None:
            self._settle(lambda: self.driver.release(held, 0.0, count_attempt=False))
            self.output(self.lines.given_back(envelope, time.monotonic() - started))
            return
        if result.outcome is Outcome.DONE:
            self._settle(lambda: self.driver.acknowledge(held))
        elif result.outcome is Outcome.RETRY:
            self._settle(lambda: self.driver.release(held, result.retry_in))
        elif result.outcome is Outcome.RELEASED:
            self._settle(lambda: self.driver.release(held, result.retry_in, count_attempt=False))
        else:
            self._settle(lambda: self._bury(held, result))
            if result.outcome is Outcome.PARKED:
                self.errors(parked_line(result))
            else:
                self.errors(f"job {envelope.id} {result.outcome}: {result.error_text}")
            # A job that cannot be built or called gets one line: its traceback
            # shows only our own frames, and failed_jobs keeps it anyway.
            cannot_succeed = isinstance(result.error, CANNOT_SUCCEED)
            if result.traceback and not self.options.quiet and not cannot_succeed:
                self.errors(result.traceback.rstrip())
        self.processed += 1
        self.tally.count(result.outcome)
        if not self.options.quiet:
            self.output(self.lines.result(result))

    def _bury(self, held: Any, result: Result) -> bool:
        """Store the job's failure and remove the job: in one transaction when the driver can.

        Otherwise the store comes first and is keyed by the job id, so a crash
        in between leaves one record and a job that comes back as a copy of
        a failure stored already (the runner settles it without running it).
        """
        failure = result.failure
        if failure is not None:
            bury_stored = getattr(self.driver, "bury_stored", None)
            store = self.runner.failed_store
            shares = getattr(self.driver, "shares_transaction_with", None)
            if bury_stored is not None and shares is not None and shares(held, store):
                return bool(bury_stored(held, failure, store))
            try:
                store.store(failure)
            except Exception as error:
                # The job stays held and is settled again with backoff: it is
                # never removed while its failure is kept nowhere.
                raise DriverUnavailableError(
                    f"cannot store the failure of job {failure.envelope.id}: {error}"
                ) from error
        return self.driver.bury(held)

    def _attempt(self, prepared: Prepared | Result) -> Result:
        """Run one prepared attempt in this thread under the timeout and the shutdown grace."""
        if isinstance(prepared, Result):
            return prepared
        if self.options.timeout:
            self._timeout_at = time.monotonic() + self.options.timeout
        self._in_job = True
        self._arm()
        try:
            return self.runner.finish(prepared)
        finally:
            self._in_job = False
            self._timeout_at = None
            self._disarm()

    # Async jobs --------------------------------------------------------------------

    def _start_async(self, held: Any, prepared: Prepared) -> None:
        """Hand an async job to the event loop; the worker reserves the next meanwhile."""
        if self._jobs is None:
            self._jobs = JobLoop(self.runner, self.options.async_concurrency, self.options.timeout)
        if self._lease_keeper is not None and getattr(self.driver, "leases", False):
            self._lease_keeper.keep(held)
        self._async_started[id(held)] = time.monotonic()
        self._jobs.start(held, prepared)

    def _running_async(self) -> int:
        """Async jobs started and not settled yet (one that ended counts until it is settled)."""
        return len(self._async_started)

    def _settle_async(self, wait: float = 0.0) -> None:
        """Settle the async jobs that ended, waiting up to `wait` seconds for one."""
        if self._jobs is None:
            return
        for held, result in self._jobs.finished(wait):
            if held is None:
                continue  # a stop signal's wake-up
            if self._lease_keeper is not None:
                self._lease_keeper.forget(held)
            self._conclude(held, result, self._async_started.pop(id(held), time.monotonic()))

    def _finish_async(self) -> None:
        """Let the async jobs in flight end (within `--grace` when stopped by a signal).

        Those still running after the grace are cancelled and go back on
        their queue without spending their attempt.
        """
        jobs = self._jobs
        if jobs is None:
            return
        cancelled_at: float | None = None
        while self._async_started:
            self._settle_async(wait=0.1)
            now = time.monotonic()
            if cancelled_at is None and self._grace_at is not None and now >= self._grace_at:
                self.errors(
                    f"cancelling {len(self._async_started)} async job(s) still running "
                    "after the grace"
                )
                jobs.cancel_all()
                cancelled_at = now
            if cancelled_at is not None and now - cancelled_at > CANCEL_WAIT_SECONDS:
                self.errors(
                    f"{len(self._async_started)} async job(s) ignored their cancellation; "
                    "their jobs come back when their lease runs out"
                )
                break
        self._settle_async()
        jobs.close()
        self._jobs = None

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
                self.errors(
                    f"{self.driver.name} unavailable, settling again in {delay:g}s: {error}"
                )
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
        if self._jobs is not None:
            self._jobs.wake()
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
            self._armed = True

    def _disarm(self) -> None:
        # Only a timer that was set needs clearing: most jobs run with none.
        if self._armed and threading.current_thread() is threading.main_thread():
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._armed = False
