"""Jobs the reliability tests push; worker processes import them from here.

Every run of a job appends its name as one line to a run log, a file the
test names. The line goes out in one `os.write` on a file opened with
`O_APPEND`, so lines of workers writing at the same moment never mix, and a
line is on disk before the job returns (a worker killed right after still
leaves it). Counting the lines counts the runs, across every process.
"""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path

from queueing import Queueable


def note_run(log: str, name: str) -> None:
    """Append the line `name` to the run log `log`."""
    descriptor = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, f"{name}\n".encode())
    finally:
        os.close(descriptor)


def runs(log: str | Path) -> collections.Counter[str]:
    """Count the runs of each job name in the run log `log` (empty when none ran)."""
    path = Path(log)
    if not path.exists():
        return collections.Counter()
    return collections.Counter(line for line in path.read_text().splitlines() if line)


class Note(Queueable):
    """An ordinary job: works for `seconds`, then notes its run."""

    def handle(self, log: str, name: str, seconds: float = 0.0) -> None:
        """Sleep `seconds`, then append `name` to `log`."""
        time.sleep(seconds)
        note_run(log, name)


class NamedNote(Queueable):
    """An ordinary job pushed as an instance, its log, name and work time in its state."""

    def __init__(self, log: str, name: str, seconds: float = 0.0) -> None:
        self.log = log
        self.name = name
        self.seconds = seconds

    def handle(self) -> None:
        """Sleep `seconds`, then append `name` to `log`."""
        time.sleep(self.seconds)
        note_run(self.log, self.name)


class KillsItsWorker(Queueable):
    """A poison job: notes its run, then ends the process running it, every time.

    `os._exit` skips every `finally` and handler, as a segfault or the OOM
    killer would: the worker never hears how the attempt ended.
    """

    def handle(self, log: str, name: str) -> None:
        """Append `name` to `log`, then exit the process with status 1."""
        note_run(log, name)
        os._exit(1)


def kill_worker(log: str, name: str) -> None:
    """A poison plain function (not a `Queueable`): notes its run, then exits the process."""
    note_run(log, name)
    os._exit(1)


class Carries(Queueable):
    """An ordinary job with a payload of any size: `ballast` travels in its arguments."""

    def handle(self, log: str, name: str, ballast: bytes) -> None:
        """Append `name` to `log`; the ballast is only carried."""
        note_run(log, name)
