"""Our I/O-bound job: a `Queueable` whose `async def handle` runs the shared body."""

from __future__ import annotations

from bench.io.work import sleep_job
from queueing import Queueable


class SleepJob(Queueable):
    """Sleeps 50 ms on the worker's event loop; pushed as an instance carrying its number."""

    def __init__(self, seq: int) -> None:
        self.seq = seq

    async def handle(self) -> None:
        """Run the body for this instance's number."""
        await sleep_job(self.seq)
