"""The "still running" lines of a long job: one every period for as long as it runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from queueing.payload import Envelope

# How often the watching thread looks whether a job began, while none is long yet.
LOOK_SECONDS = 0.1


class StillRunning:
    """Reports the job in hand every `every` seconds for as long as it runs.

    One thread per worker, started with its first job. Starting and ending a
    job only set a field under an uncontended lock, never waking the thread:
    it looks every `LOOK_SECONDS` and sleeps until a line is due, so a worker
    running thousands of short jobs a second pays nothing for the watch. The
    lock is held while a line is reported, so `forget` returns only once no
    line about the job is being written: none comes after the job's own line.
    """

    def __init__(self, every: float, report: Callable[[Envelope, float], None]) -> None:
        self._every = every
        self._report = report
        self._lock = threading.Lock()
        self._envelope: Envelope | None = None
        self._started = 0.0
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, envelope: Envelope) -> None:
        """Start timing `envelope`, which begins running now."""
        with self._lock:
            self._envelope = envelope
            self._started = time.monotonic()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="queue-watch", daemon=True)
            self._thread.start()

    def forget(self) -> None:
        """The job in hand ended: no more lines about it."""
        with self._lock:
            self._envelope = None

    def stop(self) -> None:
        """End the thread."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        reported: tuple[Envelope | None, float, int] = (None, 0.0, 0)
        while not self._closed.is_set():
            with self._lock:
                envelope, started = self._envelope, self._started
            if envelope is None:
                self._closed.wait(LOOK_SECONDS)
                continue
            lines = reported[2] if reported[:2] == (envelope, started) else 0
            due = started + (lines + 1) * self._every
            wait = due - time.monotonic()
            if wait > 0:
                self._closed.wait(min(wait, LOOK_SECONDS))
                continue
            with self._lock:
                if self._envelope is envelope and self._started == started:
                    self._report(envelope, time.monotonic() - started)
                    reported = (envelope, started, lines + 1)
