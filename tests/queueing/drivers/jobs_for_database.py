"""Jobs the database driver, worker and process tests push.

Workers in other processes import this module (the repository root is on
their PYTHONPATH), so the jobs live here rather than in a test file. Every job
leaves marker files, one per run, named `<name>.<tag>.<pid>.<random>` and
holding the time, so a test counts runs across processes by listing a folder.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from queueing import Queueable


def write_marker(directory: str, name: str, tag: str = "ran") -> None:
    """Leave one marker file for one run of `name`."""
    path = Path(directory) / f"{name}.{tag}.{os.getpid()}.{uuid.uuid4().hex}"
    path.write_text(repr(time.time()))


def markers(directory: str | Path, name: str | None = None, tag: str = "ran") -> list[Path]:
    """Return the markers left with `tag` (for `name`, or for every job)."""
    pattern = f"{name}.{tag}.*" if name is not None else f"*.{tag}.*"
    return sorted(Path(directory).glob(pattern))


def marker_times(directory: str | Path, name: str, tag: str = "ran") -> list[float]:
    """Return when each marker of `name` with `tag` was written, oldest first."""
    return sorted(float(path.read_text()) for path in markers(directory, name, tag))


def runs_by_name(directory: str | Path, tag: str = "ran") -> dict[str, int]:
    """Count the markers with `tag` of every job name."""
    counts: dict[str, int] = {}
    for path in markers(directory, tag=tag):
        name = path.name.split(f".{tag}.")[0]
        counts[name] = counts.get(name, 0) + 1
    return counts


def record(directory: str, name: str) -> None:
    """A plain function job: one marker per run."""
    write_marker(directory, name)


def sleep_then_record(directory: str, name: str, seconds: float) -> None:
    """A plain function job that takes a while: a `started` marker, then a `ran` one."""
    write_marker(directory, name, "started")
    time.sleep(seconds)
    write_marker(directory, name)


class Record(Queueable):
    """A job class: one marker per run."""

    def handle(self, directory: str, name: str) -> None:
        """Leave the marker."""
        write_marker(directory, name)


class SlowRecord(Queueable):
    """A job class that takes `seconds`: `started`, then `ran`; retried if its worker dies."""

    def handle(self, directory: str, name: str, seconds: float) -> None:
        """Mark the start, sleep, mark the end."""
        write_marker(directory, name, "started")
        time.sleep(seconds)
        write_marker(directory, name)


class FailOnce(Queueable):
    """Fails its first attempt, succeeds on the next, one second later."""

    run_times = 3
    retry_delay = 1.0

    def handle(self, directory: str, name: str) -> None:
        """Mark each attempt; raise on the first."""
        first = not markers(directory, name, "attempt")
        write_marker(directory, name, "attempt")
        if first:
            raise RuntimeError("the first attempt fails")
        write_marker(directory, name)


class Explode(Queueable):
    """Fails on its only attempt."""

    run_again_on_fail = False

    def handle(self, message: str) -> None:
        """Raise `ValueError(message)`."""
        raise ValueError(message)


class Forged:
    """Pickles into a call of `write_marker`: loading the pickle leaves a `forged` marker."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def __reduce__(self) -> tuple[object, tuple[str, str, str]]:
        return (write_marker, (self.directory, "forged", "unpickled"))


class FailWhileBroken(Queueable):
    """Fails (one attempt) while `<directory>/broken` exists: an outage an operator fixes."""

    run_again_on_fail = False

    def handle(self, directory: str, name: str) -> None:
        """Raise while the outage lasts, else leave the marker."""
        if (Path(directory) / "broken").exists():
            raise RuntimeError(f"{name}: the mail server is down")
        write_marker(directory, name)


class ReleasesOnce(Queueable):
    """Asks to go back on the queue on its first run (a rate limit, say); runs on the next."""

    run_times = 1

    def handle(self, directory: str, name: str) -> None:
        """Release on the first run, leave the marker on the second."""
        first = not markers(directory, name, "attempt")
        write_marker(directory, name, "attempt")
        if first:
            self.release(0.2)
            return
        write_marker(directory, name)


class ExplodeAndNote(Queueable):
    """Fails on its only attempt; its `failed()` writes a line to `journal` each time it runs."""

    run_again_on_fail = False

    def handle(self, journal: str) -> None:
        """Raise at once."""
        raise ValueError("boom")

    def failed(self, payload: dict[str, object], error: BaseException) -> None:
        """Note the call."""
        with open(payload["args"][0], "a", encoding="utf-8") as file:  # type: ignore[index]
            file.write("failed() called\n")
