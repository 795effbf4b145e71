"""The worker's lines: one per attempt, in aligned columns, coloured on a terminal.

A job line reads `time  [process]  job  id  queue  outcome  duration  (error)`:

    2026-11-24 15:47:13  SendWelcomeEmail  5b1b58355a0e  default  done                 12 ms
    2026-11-24 15:47:14  ResizeImage       9c04d1e2b7aa  default  retry 1/3 in 1 s    4.0 s  (...)

The process column appears only when the worker is told its name (each child
of `craft queue:work --concurrency` is). The same format serves the worker
and the blocking async driver.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from typing import IO, Any

import click

from queueing.execution import Outcome, Result
from queueing.payload import Envelope

GAP = "  "
# Columns wide enough for the common values; a longer value widens its
# column from then on, so later lines line up with it.
JOB_WIDTH = 20
OUTCOME_WIDTH = 16  # "retry 2/3 in 1 s"
DURATION_WIDTH = 9  # "59 min 59 s"

_COLOURS: dict[str, dict[str, Any]] = {
    "done": {"fg": "green"},
    "retry": {"fg": "yellow"},
    "released": {"fg": "cyan"},
    "failed": {"fg": "red", "bold": True},
    "parked": {"fg": "magenta", "bold": True},
    "still": {"fg": "blue"},
}


def use_colour(stream: IO[str]) -> bool:
    """Say whether lines written to `stream` should be coloured.

    Only a terminal gets colour, and never when `NO_COLOR` is set to anything
    but the empty string (https://no-color.org).
    """
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def short_name(name: str) -> str:
    """Return the part of a job name a reader recognises.

    `app.jobs.SendWelcomeEmail.SendWelcomeEmail` -> `SendWelcomeEmail`;
    `app.jobs.reports:Report.send` -> `Report.send`; a lambda or closure keeps
    its module and enclosing function: `app.jobs.reports:build.<locals>.<lambda>`.
    """
    _module, colon, qualname = name.partition(":")
    if colon:
        return name if "<" in qualname else qualname
    return name.rpartition(".")[2] or name


# Longest claimed name shown whole; a longer one is cut (whoever wrote the row chose it).
_CLAIM_SHOWN = 120


def claimed_name(name: str) -> str:
    """Show a job name read from an unverified row or message as the sender's claim.

    Quoted with `repr`, so control characters in it never reach the terminal.
    """
    if len(name) > _CLAIM_SHOWN:
        name = name[: _CLAIM_SHOWN - 3] + "..."
    return f"unverified name {name!r}"


def parked_line(result: Result) -> str:
    """The one stderr line for a parked payload: its id, the name it claims, why it was refused."""
    return (
        f"job {result.envelope.id} parked without loading it, "
        f"{claimed_name(result.envelope.name)}: {result.error_text}"
    )


def readable_duration(seconds: float) -> str:
    """Say how long something took: `0.4 ms`, `12 ms`, `4.0 s`, `2 min 05 s`, `1 h 02 min`."""
    if seconds < 0.00995:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 0.9995:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def readable_wait(seconds: float) -> str:
    """Say how long a job waits: `500 ms`, `1 s`, `1.5 s`, `10 min`, `2 h 30 min`, `3 d`."""
    if 0 < seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{round(seconds, 3):g} s"
    whole = round(seconds)
    for size, unit, smaller_size, smaller_unit in (
        (86400, "d", 3600, "h"),
        (3600, "h", 60, "min"),
        (60, "min", 1, "s"),
    ):
        if whole >= size:
            rest = whole % size // smaller_size
            return f"{whole // size} {unit}" + (f" {rest} {smaller_unit}" if rest else "")
    return f"{whole} s"


def outcome_text(result: Result) -> str:
    """Say what became of the attempt: `done`, `retry 2/3 in 1 s`, `failed 3/3`, `parked`."""
    if result.outcome is Outcome.DONE:
        return "done"
    if result.outcome is Outcome.RETRY:
        return f"retry {_attempt(result)} in {readable_wait(result.retry_in)}"
    if result.outcome is Outcome.FAILED:
        return f"failed {_attempt(result)}"
    if result.outcome is Outcome.RELEASED:
        return f"released in {readable_wait(result.retry_in)}" if result.retry_in else "released"
    return str(result.outcome)


def _attempt(result: Result) -> str:
    """`2/3`: this attempt and, when the runner says, how many the job gets in all."""
    allowed = getattr(result, "attempts_allowed", None)
    return f"{result.envelope.attempts}/{allowed}" if allowed else f"#{result.envelope.attempts}"


@dataclasses.dataclass
class Tally:
    """What a worker did, for the line it prints when it exits."""

    processed: int = 0
    done: int = 0
    failed: int = 0
    retried: int = 0
    parked: int = 0
    released: int = 0

    def count(self, outcome: Outcome) -> None:
        """Count one settled attempt."""
        self.processed += 1
        if outcome is Outcome.DONE:
            self.done += 1
        elif outcome is Outcome.RETRY:
            self.retried += 1
        elif outcome is Outcome.FAILED:
            self.failed += 1
        elif outcome is Outcome.PARKED:
            self.parked += 1
        elif outcome is Outcome.RELEASED:
            self.released += 1


class LineFormat:
    """Builds one worker's lines, keeping their columns aligned.

    `queues` are the queues the worker serves: the queue column is as wide as
    the longest of them. `process` names the worker process in every line.
    """

    def __init__(
        self, queues: Sequence[str] = (), process: str | None = None, colour: bool = False
    ) -> None:
        self.process = process
        self.colour = colour
        self._job_width = JOB_WIDTH
        self._queue_width = max((len(queue) for queue in queues), default=0)

    def result(self, result: Result) -> str:
        """The line for one attempt."""
        error = result.error_text if result.outcome is not Outcome.DONE else ""
        # A parked payload was never verified: its name is only what the row says.
        name = claimed_name(result.envelope.name) if result.outcome is Outcome.PARKED else None
        return self._job_line(
            result.envelope, outcome_text(result), readable_duration(result.duration), error, name
        )

    def given_back(self, envelope: Envelope, duration: float) -> str:
        """The line for a job handed back unfinished because the worker is stopping."""
        return self._job_line(envelope, "released", readable_duration(duration), "worker stopping")

    def still_running(self, envelope: Envelope, elapsed: float) -> str:
        """The line for a job that has been running for `elapsed` seconds."""
        return self._job_line(envelope, "still running", readable_duration(elapsed), "")

    def summary(self, tally: Tally, wall: float) -> str:
        """The line a worker prints when it exits."""
        counts = [
            f"{tally.processed} processed",
            f"{tally.done} done",
            f"{tally.failed} failed",
            f"{tally.retried} retried",
        ]
        counts += [f"{tally.parked} parked"] if tally.parked else []
        counts += [f"{tally.released} released"] if tally.released else []
        who = "stopped" if self.process else "worker stopped"
        text = f"{who} after {readable_duration(wall)}: {', '.join(counts)}"
        return GAP.join([*self._leading(), text])

    def _leading(self) -> list[str]:
        columns = [self._style(_stamp(), dim=True)]
        if self.process:
            columns.append(self.process)
        return columns

    def _job_line(
        self, envelope: Envelope, outcome: str, duration: str, error: str, name: str | None = None
    ) -> str:
        name = name or short_name(envelope.name)
        self._job_width = max(self._job_width, len(name))
        self._queue_width = max(self._queue_width, len(envelope.queue))
        columns = [
            *self._leading(),
            name.ljust(self._job_width),
            envelope.id[:12],
            envelope.queue.ljust(self._queue_width),
            self._style(outcome.ljust(OUTCOME_WIDTH), **_COLOURS.get(outcome.split()[0], {})),
            duration.rjust(DURATION_WIDTH),
        ]
        if error:
            columns.append(self._style(f"({error})", dim=True))
        return GAP.join(columns)

    def _style(self, text: str, **styles: Any) -> str:
        return click.style(text, **styles) if self.colour and styles else text


_stamped: list[Any] = [None, ""]


def _stamp() -> str:
    """The local time to the second, formatted once per second (workers print thousands)."""
    second = int(time.time())
    if _stamped[0] != second:
        _stamped[:] = [second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))]
    return str(_stamped[1])


def result_line(result: Result) -> str:
    """Return the uncoloured line for one attempt, on its own (the blocking async driver)."""
    return LineFormat().result(result)
