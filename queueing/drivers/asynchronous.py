"""The `async` driver: background work inside the pushing process.

Pushed envelopes wait in an in-memory schedule ordered by due time. A bounded
set of worker threads, started on first use and reused for every push, takes
the due ones. In `threading` mode a worker thread runs the job itself; in
`multiprocess` mode each worker thread owns one child process (started with
`spawn`) that builds its own container from the application's providers and
runs the job there. Waits and retry delays never block the pusher.

The worker threads are not daemons: when the main thread ends, they finish
the jobs due now, wait up to `exit_grace` seconds for delayed ones and
retries, then log the ids of any job they had to drop. The schedule lives in
memory; use the database or amqp driver for jobs that must survive a restart.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import multiprocessing
import os
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

from container import Container
from queueing.clock import Clock, SystemClock
from queueing.drivers.base import Driver
from queueing.execution import JobRunner, Outcome, Result
from queueing.payload import Envelope
from queueing.reporting import result_line

logger = logging.getLogger("queueing.async")

MODES = ("threading", "multiprocess")
_IDLE_POLL = 0.2  # how often idle workers look whether the main thread has ended


class WorkerProcessDied(RuntimeError):
    """The child process running a job exited before it reported a result."""


class JobFailedError(RuntimeError):
    """A job failed for good in blocking mode; carries the job's own traceback text."""


class AsyncDriver(Driver):
    """Runs jobs in background threads or child processes of this process."""

    name = "async"

    def __init__(
        self,
        runner: JobRunner,
        mode: str = "threading",
        workers: int | None = None,
        blocking: bool = False,
        container_factory: Callable[[], Container] | None = None,
        exit_grace: float = 30.0,
        clock: Clock | None = None,
        output: Callable[[str], None] | None = None,
        errors: Callable[[str], None] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"async driver: mode must be one of {', '.join(MODES)}, not {mode!r}")
        if mode == "multiprocess" and container_factory is None:
            raise ValueError(
                "async driver: multiprocess mode needs a container_factory that builds "
                "the application's container in each child process"
            )
        if workers is not None and int(workers) < 1:
            raise ValueError(f"async driver: workers must be at least 1, not {workers!r}")
        self.runner = runner
        self.mode = mode
        self.workers = int(workers) if workers else min(32, (os.cpu_count() or 1) + 4)
        self.blocking = bool(blocking)
        self.container_factory = container_factory
        self.exit_grace = float(exit_grace)
        self.clock = clock or SystemClock()
        self.output = output or print
        self.errors = errors or (lambda line: print(line, file=sys.stderr, flush=True))
        self._schedule: list[tuple[float, int, Envelope]] = []
        self._order = itertools.count()
        self._condition = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._running = 0
        self._closing = False
        self._local = threading.local()
        self._children: list[_ChildProcess] = []

    # Pushing ----------------------------------------------------------------------

    def push(self, envelopes: Sequence[Envelope], channel: str | None = None) -> None:
        """Schedule `envelopes`; in blocking mode run them to the end first."""
        if self.blocking:
            for envelope in envelopes:
                self._run_blocking(envelope)
            return
        with self._condition:
            if self._closing:
                raise RuntimeError("async driver is closed; no more jobs can be pushed")
            for envelope in envelopes:
                self._add(envelope)
            self._start_workers()
            self._condition.notify(len(envelopes))

    def _add(self, envelope: Envelope) -> None:
        heapq.heappush(self._schedule, (envelope.available_at, next(self._order), envelope))

    def _start_workers(self) -> None:
        while len(self._threads) < self.workers:
            thread = threading.Thread(
                target=self._work, name=f"queue-async-{len(self._threads) + 1}", daemon=False
            )
            self._threads.append(thread)
            thread.start()

    def _run_blocking(self, envelope: Envelope) -> None:
        result = self.runner.run_until_settled(
            envelope,
            report=lambda result: self.output(f"Job Ran: {result_line(result)}"),
            attempt=self._attempt,
        )
        if result.outcome in (Outcome.FAILED, Outcome.PARKED):
            if result.error is not None:
                raise result.error
            raise JobFailedError(
                f"job {envelope.id} failed: {result.error_text}\n{result.traceback}"
            )

    # Waiting ----------------------------------------------------------------------

    def pending(self) -> int:
        """Return how many jobs are scheduled or running."""
        with self._condition:
            return len(self._schedule) + self._running

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no job is scheduled or running; return False on timeout."""
        with self._condition:
            return self._condition.wait_for(
                lambda: not self._schedule and not self._running, timeout
            )

    def close(self, timeout: float | None = None) -> None:
        """Finish what is due and in hand (up to `exit_grace` for delayed jobs), then stop."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        for thread in list(self._threads):
            if thread is not threading.current_thread():
                thread.join(timeout)
        for child in self._children:
            child.stop()

    # Working ----------------------------------------------------------------------

    def _work(self) -> None:
        try:
            while (envelope := self._next()) is not None:
                try:
                    result = self._attempt(envelope.started())
                    if result.outcome in (Outcome.FAILED, Outcome.PARKED):
                        self.errors(
                            f"async: job {envelope.id} ({envelope.name}) {result.outcome}: "
                            f"{result.error_text}"
                        )
                    again = result.again(self.clock.now())
                    if again is not None:
                        with self._condition:
                            self._add(again)
                except Exception:
                    logger.exception("async driver: job %s could not be run", envelope.id)
                finally:
                    with self._condition:
                        self._running -= 1
                        self._condition.notify_all()
        finally:
            child = getattr(self._local, "child", None)
            if child is not None:
                child.stop()

    def _next(self) -> Envelope | None:
        """Take the next due envelope, or return None when this worker should stop."""
        deadline: float | None = None
        with self._condition:
            while True:
                now = self.clock.now()
                if self._schedule and self._schedule[0][0] <= now:
                    self._running += 1
                    return heapq.heappop(self._schedule)[2]
                if self._closing or not threading.main_thread().is_alive():
                    if deadline is None:
                        deadline = now + self.exit_grace
                    if not self._schedule and not self._running:
                        return None
                    if self._schedule and self._schedule[0][0] > deadline and not self._running:
                        self._drop_remaining()
                        return None
                wait = _IDLE_POLL
                if self._schedule:
                    wait = min(wait, max(0.0, self._schedule[0][0] - now))
                self._condition.wait(wait)

    def _drop_remaining(self) -> None:
        dropped = [entry[2].id for entry in self._schedule]
        self._schedule.clear()
        self._condition.notify_all()
        logger.warning(
            "async driver: the program ended with %d delayed job(s) not yet due; "
            "they were dropped: %s",
            len(dropped),
            ", ".join(dropped),
        )

    def _attempt(self, envelope: Envelope) -> Result:
        if self.mode == "threading":
            return self.runner.run(envelope)
        child = getattr(self._local, "child", None)
        if child is None:
            assert self.container_factory is not None
            child = self._local.child = _ChildProcess(self.container_factory)
            with self._condition:
                self._children.append(child)
        try:
            return child.run(envelope)
        except WorkerProcessDied as error:
            self._local.child = None
            return self.runner.abandon(envelope, error)


class _ChildProcess:
    """One spawned process that builds the application's container and runs jobs."""

    def __init__(self, container_factory: Callable[[], Container]) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child_end = context.Pipe()
        self.process = context.Process(
            target=_child_main, args=(child_end, container_factory), daemon=True
        )
        self.process.start()
        child_end.close()

    def run(self, envelope: Envelope) -> Result:
        try:
            self._connection.send(envelope)
            reply = self._connection.recv()
        except (EOFError, OSError) as error:
            self.process.join(1)
            raise WorkerProcessDied(
                f"child process {self.process.pid} exited (code {self.process.exitcode}) "
                f"while running job {envelope.id}"
            ) from error
        if isinstance(reply, BaseException):
            raise WorkerProcessDied(f"child process {self.process.pid} failed: {reply}")
        return reply

    def stop(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(OSError):
                self._connection.send(None)
            self.process.join(5)
            if self.process.is_alive():
                self.process.terminate()
        self._connection.close()


def _child_main(connection: Connection, container_factory: Callable[[], Container]) -> None:
    """Entry point of a child process: build the container, then run what is sent."""
    try:
        runner = container_factory().make(JobRunner)
    except Exception as error:
        traceback.print_exc(file=sys.stderr)
        message: Any = RuntimeError(f"the child could not build its container: {error}")
        connection.send(message)
        return
    while True:
        try:
            envelope = connection.recv()
        except EOFError:
            return
        if envelope is None:
            return
        connection.send(runner.run(envelope))
