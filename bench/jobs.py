"""Our benchmark job: a `Queueable` class pushed uninstantiated, as applications push jobs.

The worker builds it through its container and calls `handle(seq)`, so the
measured path is the full one: verify, unpickle, build, call, settle.
"""

from __future__ import annotations

from bench.probe import record
from queueing import Queueable


class NoopJob(Queueable):
    """Does nothing but note that it started."""

    def handle(self, seq: int) -> None:
        """Record `seq` and the start time."""
        record(seq)


class NumberedNoopJob(Queueable):
    """A job instance carrying its sequence number, for pushing many in one call."""

    def __init__(self, seq: int) -> None:
        self.seq = seq

    def handle(self) -> None:
        """Record the sequence number this instance was built with."""
        record(self.seq)
