"""Keeping the leases of the jobs a worker holds alive while they run.

A driver whose reservations expire (the database driver's leases; the amqp
driver uses the same call to notice a long job) says how often with
`extend_every`, and the worker's `LeaseKeeper` calls its `extend` for every
job in hand on that period: the one sync job, and each async job in flight.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("queueing.worker")


class LeaseKeeper:
    """Extends the lease of each job in hand, for drivers that lease (`extend`).

    One thread per worker, started with its first job, so that a job costs
    only a dict entry set and removed under a lock. The lock is also held
    around each `extend`, so forgetting a job waits for an extension of it
    that is under way: a job is never extended once the worker settles it.
    """

    def __init__(self, extend: Callable[[Any], bool], every: float) -> None:
        self._extend = extend
        self._every = every
        self._lock = threading.Lock()
        # id(held) -> [held, when its next extension is due]
        self._held: dict[int, list[Any]] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_driver(cls, driver: Any) -> LeaseKeeper | None:
        """Return a keeper for `driver`, or None if its jobs hold no lease to extend.

        A driver that wants `extend` called while a job runs says how often,
        in seconds, with `extend_every`.
        """
        extend = getattr(driver, "extend", None)
        every = getattr(driver, "extend_every", None)
        if extend is None or not every:
            return None
        return cls(extend, every)

    def keep(self, held: Any) -> None:
        """Extend `held`'s lease every period from now on, until `forget(held)`."""
        with self._lock:
            self._held[id(held)] = [held, time.monotonic() + self._every]
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="queue-lease", daemon=True)
            self._thread.start()

    def forget(self, held: Any) -> None:
        """Stop extending `held`, once an extension under way has ended."""
        with self._lock:
            self._held.pop(id(held), None)

    def stop(self) -> None:
        """End the thread; a later `keep` starts a new one."""
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join()
        self._thread = None
        self._stopping.clear()

    def _run(self) -> None:
        wait = self._every
        while not self._stopping.wait(wait):
            wait = self._extend_due()

    def _extend_due(self) -> float:
        """Extend every job whose period is up; return how long to sleep until the next."""
        with self._lock:
            now = time.monotonic()
            # A job handed over meanwhile is due a full period after it
            # started, so sleeping a period never makes its extension late.
            wait = self._every
            for key, entry in list(self._held.items()):
                held, due = entry
                if due > now:
                    wait = min(wait, due - now)
                    continue
                entry[1] = now + self._every
                try:
                    if not self._extend(held):
                        logger.warning("lost the lease of job %s", held.envelope.id)
                        del self._held[key]
                except Exception as error:
                    logger.warning(
                        "could not extend the lease of job %s: %s", held.envelope.id, error
                    )
            return max(0.01, wait)
