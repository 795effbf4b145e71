"""Jobs that kill the worker running them, for the amqp fault tests.

Importable by `craft queue:work` processes as
`tests.queueing.drivers.jobs_for_amqp_faults`; each run leaves a marker the
way `jobs_for_amqp` does, before the job dies or returns.
"""

from __future__ import annotations

import os
import sys

from queueing import Queueable
from tests.queueing.drivers.jobs_for_amqp import markers, write_marker


def die() -> None:
    """End this process at once, as a segfault would: no cleanup, no acknowledgement."""
    sys.stdout.flush()
    os._exit(1)


class KillsWorker(Queueable):
    """Marks its run, then kills the worker (three attempts, the default)."""

    def handle(self, directory: str, name: str) -> None:
        """Leave a `started` marker and die."""
        write_marker(directory, name, "started")
        die()


def kill_worker(directory: str, name: str) -> None:
    """A plain function that marks its run, then kills the worker."""
    write_marker(directory, name, "started")
    die()


class OneAttempt(Queueable):
    """One marker per run; it has a single attempt."""

    run_times = 1

    def handle(self, directory: str, name: str) -> None:
        """Leave the marker."""
        write_marker(directory, name)


class FailsOnce(Queueable):
    """Fails its first attempt and succeeds on its second (its last)."""

    run_times = 2
    retry_delay = 0.5

    def handle(self, directory: str, name: str) -> None:
        """Mark each attempt; raise on the first."""
        first = not markers(directory, name, "attempt")
        write_marker(directory, name, "attempt")
        if first:
            raise RuntimeError("the first attempt fails")
        write_marker(directory, name)
