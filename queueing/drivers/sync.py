"""The `sync` driver: runs each job at push time, in the pushing thread."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from queueing.drivers.base import Driver
from queueing.execution import JobRunner, Outcome, Result
from queueing.payload import Envelope


class SyncDriver(Driver):
    """Runs jobs before `push` returns, with the full retry and failure policy.

    Waits and retry delays are slept out, so `push` returns once every job has
    settled. With `raise_errors`, a job that fails for good re-raises its last
    exception from `push`, which suits tests and scripts that want to stop.
    """

    name = "sync"

    def __init__(
        self,
        runner: JobRunner,
        raise_errors: bool = False,
        report: Callable[[Result], None] | None = None,
    ) -> None:
        self.runner = runner
        self.raise_errors = raise_errors
        self.report = report

    def push(self, envelopes: Sequence[Envelope], channel: str | None = None) -> None:
        """Run every envelope to the end, one after the other."""
        for envelope in envelopes:
            result = self.runner.run_until_settled(envelope, self.report)
            if self.raise_errors and result.outcome is Outcome.FAILED and result.error:
                raise result.error
