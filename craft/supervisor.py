"""`craft queue:work --concurrency N`: keeps N worker processes running.

Each child is `craft queue:work` with the same options. A child that dies
(killed, crashed, or exited non-zero) is reported in one line naming it and
why, and started again after a short backoff that grows while it keeps dying
young. Before the restart the supervisor gives back the jobs the dead child
held (`release_held_by`), so they run at once instead of after their lease.
A child that exits 0 has finished (`--stop-when-empty`, `--max-jobs`,
`--max-time`) and is not replaced; the supervisor exits 0 once every child
has. A child that dies before it is ready, `START_FAILURES` times in a row,
means the workers cannot start at all (bad settings, a server that is not
there): the supervisor stops the others and exits 1 with one line.

A child says it is ready by writing a line to the pipe named by the
`QUEUE_SUPERVISOR_FD` variable, once its checks have passed. Its slot number
(1 to N, kept across restarts) is in `QUEUE_WORKER_NUMBER`, so every line it
prints can say which worker ran the job.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# The variable naming the file descriptor a child writes "ready" to.
READY_VARIABLE = "QUEUE_SUPERVISOR_FD"
# The variable holding a child's slot number.
NUMBER_VARIABLE = "QUEUE_WORKER_NUMBER"
# Deaths before readiness, in a row, after which the supervisor gives up.
START_FAILURES = 3
# A child that lived this long before dying is restarted without delay.
SETTLED_SECONDS = 10.0
FIRST_BACKOFF_SECONDS = 0.25
MAX_BACKOFF_SECONDS = 10.0
# How long stopping children may take after SIGTERM before they are killed.
STOP_SECONDS = 60.0


def announce_ready() -> None:
    """Tell the supervisor, if there is one, that this worker passed its checks."""
    descriptor = os.environ.get(READY_VARIABLE)
    if not descriptor:
        return
    with contextlib.suppress(OSError, ValueError):
        os.write(int(descriptor), b"ready\n")
        os.close(int(descriptor))
    os.environ.pop(READY_VARIABLE, None)


def worker_number() -> int | None:
    """The slot this process fills under a supervisor (from 1), or None when it runs alone."""
    try:
        return int(os.environ[NUMBER_VARIABLE])
    except (KeyError, ValueError):
        return None


@dataclass
class _Child:
    """One worker slot: its current process and how it has fared."""

    number: int
    process: subprocess.Popen[bytes] | None = None
    ready_pipe: int | None = None
    ready: bool = False
    started_at: float = 0.0
    start_failures: int = 0
    quick_deaths: int = 0
    restart_at: float | None = None
    finished: bool = False
    last_status: int = 0


class Supervisor:
    """Runs `count` copies of a worker command and replaces the ones that die."""

    def __init__(
        self,
        count: int,
        command: Sequence[str],
        release_held_by: Callable[[int], int] | None = None,
        errors: Callable[[str], None] | None = None,
    ) -> None:
        self.count = count
        self.command = list(command)
        self.release_held_by = release_held_by
        self.errors = errors or (lambda line: print(line, file=sys.stderr, flush=True))
        self._children = [_Child(number) for number in range(1, count + 1)]
        self._stopping = False
        self._selector = selectors.DefaultSelector()

    def run(self) -> int:
        """Supervise until every child finished or a stop signal; return the exit status."""
        previous = {
            number: signal.signal(number, self._on_signal)
            for number in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for child in self._children:
                self._start(child)
            return self._watch()
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
            self._selector.close()

    def _watch(self) -> int:
        while True:
            self._read_ready(timeout=0.1)
            now = time.monotonic()
            for child in self._children:
                if child.process is not None and child.process.poll() is not None:
                    failed = self._ended(child)
                    if failed is not None:
                        return failed
                if child.restart_at is not None and now >= child.restart_at:
                    if self._stopping:
                        child.restart_at = None
                        child.finished = True
                    else:
                        self._start(child)
            if all(child.finished for child in self._children):
                return max(child.last_status for child in self._children)

    def _start(self, child: _Child) -> None:
        reader, writer = os.pipe()
        environment = {
            **os.environ,
            READY_VARIABLE: str(writer),
            NUMBER_VARIABLE: str(child.number),
        }
        child.process = subprocess.Popen(
            [sys.executable, "-m", "craft", *self.command],
            env=environment,
            pass_fds=(writer,),
            stdin=subprocess.DEVNULL,
        )
        os.close(writer)
        child.ready_pipe = reader
        child.ready = False
        child.started_at = time.monotonic()
        child.restart_at = None
        self._selector.register(reader, selectors.EVENT_READ, child)

    def _read_ready(self, timeout: float) -> None:
        for key, _events in self._selector.select(timeout):
            child: _Child = key.data
            try:
                data = os.read(key.fd, 64)
            except OSError:
                data = b""
            if data.startswith(b"ready"):
                child.ready = True
                child.start_failures = 0
            self._forget_pipe(child)

    def _forget_pipe(self, child: _Child) -> None:
        if child.ready_pipe is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(child.ready_pipe)
        with contextlib.suppress(OSError):
            os.close(child.ready_pipe)
        child.ready_pipe = None

    def _ended(self, child: _Child) -> int | None:
        """Deal with a child that exited; return an exit status to stop with, or None."""
        assert child.process is not None
        # A "ready" written just before the child died may still sit in the pipe.
        if child.ready_pipe is not None and not child.ready:
            self._read_ready(timeout=0)
        self._forget_pipe(child)
        status = child.process.returncode
        pid = child.process.pid
        child.process = None
        child.last_status = status
        if status == 0 or (self._stopping and status in _STOPPED_STATUSES):
            child.finished = True
            child.last_status = 0
            return None
        lived = time.monotonic() - child.started_at
        reason = _describe_exit(status)
        if not child.ready:
            child.start_failures += 1
            if child.start_failures >= START_FAILURES:
                self.errors(
                    f"craft: worker {child.number} {reason} before it was ready, "
                    f"{child.start_failures} times in a row; stopping all workers "
                    "(its own error is above)"
                )
                self._stop_all()
                return 1
        given_back = self._give_back(pid)
        if self._stopping:
            child.finished = True
            self.errors(f"worker {child.number} (pid {pid}) {reason} while stopping")
            return None
        child.quick_deaths = 0 if lived >= SETTLED_SECONDS else child.quick_deaths + 1
        delay = (
            0.0
            if child.quick_deaths == 0
            else min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** (child.quick_deaths - 1))
        )
        held = f", gave back {given_back} job(s) it held" if given_back else ""
        self.errors(
            f"worker {child.number} (pid {pid}) {reason} after {lived:.1f} s{held}; "
            f"starting it again in {delay:g} s"
        )
        child.restart_at = time.monotonic() + delay
        return None

    def _give_back(self, pid: int) -> int:
        if self.release_held_by is None:
            return 0
        try:
            return self.release_held_by(pid)
        except Exception as error:
            self.errors(f"could not give back the jobs of pid {pid} at once: {error}")
            return 0

    def _on_signal(self, number: int, _frame: Any) -> None:
        self._stopping = True
        for child in self._children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(number)

    def _stop_all(self) -> None:
        self._stopping = True
        running = [
            child.process
            for child in self._children
            if child.process is not None and child.process.poll() is None
        ]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + STOP_SECONDS
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# How a child stopped by our forwarded SIGTERM/SIGINT may end.
_STOPPED_STATUSES = (0, 130, -signal.SIGTERM, -signal.SIGINT)


def _describe_exit(status: int) -> str:
    """How a process ended: `exited with status 1`, `was killed by SIGKILL`."""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"was killed by {name}"
    return f"exited with status {status}"
