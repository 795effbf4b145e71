"""Jobs the amqp driver tests push, importable by `craft queue:work` processes.

Workers run from the repository root, so `tests.queueing.drivers.jobs_for_amqp`
imports there. Every run of a job leaves a marker file
`<name>.<tag>.<pid>.<random>` holding the time it was written, so a test
counts runs, and orders them, across processes by listing one folder.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from queueing import Queueable


def write_marker(directory: str, name: str, tag: str = "ran") -> None:
    """Leave one marker for one run of `name`."""
    path = Path(directory) / f"{name}.{tag}.{os.getpid()}.{uuid.uuid4().hex}"
    path.write_text(repr(time.time()))


def markers(directory: str | Path, name: str = "*", tag: str = "ran") -> list[Path]:
    """Return the markers of `name` (default: every job) left with `tag`."""
    return sorted(Path(directory).glob(f"{name}.{tag}.*"))


def marker_times(directory: str | Path, name: str, tag: str = "ran") -> list[float]:
    """Return when each marker of `name` with `tag` was written, oldest first."""
    return sorted(float(path.read_text()) for path in markers(directory, name, tag))


def runs_by_name(directory: str | Path, tag: str = "ran") -> dict[str, int]:
    """Count the markers with `tag` of each job name."""
    counts: dict[str, int] = {}
    for path in markers(directory, tag=tag):
        name = path.name.split(f".{tag}.")[0]
        counts[name] = counts.get(name, 0) + 1
    return counts


class Record(Queueable):
    """One marker per run."""

    def handle(self, directory: str, name: str) -> None:
        """Leave the marker."""
        write_marker(directory, name)


class Numbered(Queueable):
    """A job instance with state: its number names its marker."""

    def __init__(self, number: int) -> None:
        self.number = number

    def handle(self, directory: str) -> None:
        """Leave a marker named after the number."""
        write_marker(directory, f"n{self.number}")


class SlowRecord(Queueable):
    """Takes `seconds`: a `started` marker, then a `ran` one."""

    def handle(self, directory: str, name: str, seconds: float) -> None:
        """Mark the start, sleep, mark the end."""
        write_marker(directory, name, "started")
        time.sleep(seconds)
        write_marker(directory, name)


class FailFirst(Queueable):
    """Fails its first attempt; the retry, `retry_delay` seconds later, succeeds."""

    run_times = 2
    retry_delay = 3.0

    def handle(self, directory: str, name: str) -> None:
        """Mark each attempt; raise on the first."""
        first = not markers(directory, name, "attempt")
        write_marker(directory, name, "attempt")
        if first:
            raise RuntimeError("the first attempt fails")
        write_marker(directory, name)


class GivesUp(Queueable):
    """Fails its only attempt; `failed()` leaves a `failed` marker holding what it was given."""

    run_again_on_fail = False

    def handle(self, directory: str, name: str) -> None:
        """Mark the attempt, then raise."""
        write_marker(directory, name, "attempt")
        raise RuntimeError("this job always fails")

    def failed(self, payload: dict[str, Any], error: Exception) -> None:
        """Leave a marker naming the attempts the payload reports and the error."""
        directory, name = payload["args"]
        path = Path(directory) / f"{name}.failed.{os.getpid()}.{uuid.uuid4().hex}"
        path.write_text(f"{payload['ran']} {payload['queue']} {error}")


def explode(directory: str, name: str) -> None:
    """A plain function that marks its run and raises."""
    write_marker(directory, name, "attempt")
    raise ValueError("a plain function failed")


class Forged:
    """Pickles into a call of `write_marker`: unpickling it leaves a `forged` marker."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def __reduce__(self) -> tuple[object, tuple[str, str, str]]:
        return (write_marker, (self.directory, "forged", "unpickled"))
