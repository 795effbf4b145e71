"""The "still running" lines of a long job: one every period for as long as it runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from queueing.payload import Envelope


class StillRunning:
    """Reports the job in hand every `every` seconds for as long as it runs.

    One thread per worker, started with its first job. The lock is held while
    a line is reported, so `forget` returns only once no line about the job
    is being written: none comes after the job's own line.
    """

    def __init__(self, every: float, report: Callable[[Envelope, float], None]) -> None:
        self._every = every
        self._report = report
        self._changed = threading.Condition()
        self._envelope: Envelope | None = None
        self._started = 0.0
        self._closed = False
        self._thread: threading.Thread | None = None

    def watch(self, envelope: Envelope) -> None:
        """Start timing `envelope`, which begins running now."""
        with self._changed:
            self._envelope = envelope
            self._started = time.monotonic()
            self._changed.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="queue-watch", daemon=True)
            self._thread.start()

    def forget(self) -> None:
        """The job in hand ended: no more lines about it."""
        with self._changed:
            self._envelope = None
            self._changed.notify()

    def stop(self) -> None:
        """End the thread."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        with self._changed:
            while not self._closed:
                envelope, started = self._envelope, self._started
                if envelope is None:
                    self._changed.wait()
                    continue
                elapsed = time.monotonic() - started
                due = (int(elapsed / self._every) + 1) * self._every
                self._changed.wait(due - elapsed)
                still = self._envelope is envelope and self._started == started
                if still and not self._closed and time.monotonic() - started >= due:
                    self._report(envelope, time.monotonic() - started)
