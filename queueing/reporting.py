"""One line per job ran, the same for the worker and the blocking async driver."""

from __future__ import annotations

import datetime as dt

from queueing.execution import Outcome, Result


def short_name(name: str) -> str:
    """Return the class or function part of a dotted job name."""
    module, _, qualname = name.rpartition(".")
    if qualname == "<lambda>" or qualname.startswith("<"):
        return f"{module.rpartition('.')[2]}.{qualname}" if module else qualname
    return qualname


def outcome_text(result: Result) -> str:
    """Say what happened: done, retry in Xs, failed or parked."""
    if result.outcome is Outcome.RETRY:
        return f"retry in {result.retry_in:g}s"
    return str(result.outcome)


def result_line(result: Result) -> str:
    """Return `time  job  id  queue  outcome  duration` for one attempt."""
    envelope = result.envelope
    stamp = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S")
    line = (
        f"{stamp}  {short_name(envelope.name)}  {envelope.id[:12]}  {envelope.queue}  "
        f"{outcome_text(result)}  {result.duration * 1000:.1f} ms"
    )
    if result.error_text and result.outcome is not Outcome.DONE:
        line += f"  ({result.error_text})"
    return line
