"""Where a worker's async jobs run: one event loop on its own thread, many jobs at once.

The worker's own thread reserves jobs, runs sync ones itself and settles
every job with the driver; it hands each prepared async job to the loop
with `start`, up to `limit` at once, and takes the results back with
`finished`. So the driver is only ever used from the worker's thread, a sync
job never blocks the loop, and async jobs never wait for each other.

A job cancelled by `cancel_all` (the worker is stopping and its grace ran
out) ends with `None` instead of a result: it goes back on its queue without
spending its attempt. A job that swallows the cancellation keeps its slot
until it really ends.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any

from queueing.execution import JobRunner, Prepared, Result

logger = logging.getLogger("queueing.worker")


class JobLoop:
    """An event loop thread running up to `limit` async jobs of one worker at once."""

    def __init__(self, runner: JobRunner, limit: int, timeout: float | None = None) -> None:
        if limit < 1:
            raise ValueError(f"async concurrency must be at least 1, not {limit!r}")
        self.runner = runner
        self.limit = limit
        self.timeout = timeout
        self._results: queue.Queue[tuple[Any, Result | None]] = queue.Queue()
        self._tasks: dict[asyncio.Task[Any], Any] = {}
        self._running = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="queue-async-jobs", daemon=True)
        self._thread.start()

    @property
    def running(self) -> int:
        """Async jobs started and not yet handed back."""
        with self._lock:
            return self._running

    def full(self) -> bool:
        """Whether `limit` jobs are running, so no other may start."""
        return self.running >= self.limit

    def start(self, held: Any, prepared: Prepared) -> None:
        """Run `prepared` on the loop; its result comes back from `finished` with `held`."""
        with self._lock:
            self._running += 1
        self._loop.call_soon_threadsafe(self._begin, held, prepared)

    def finished(self, timeout: float | None = 0.0) -> list[tuple[Any, Result | None]]:
        """Take the jobs that ended, waiting up to `timeout` seconds for a first one."""
        try:
            first = self._results.get(timeout=timeout) if timeout else self._results.get_nowait()
        except queue.Empty:
            return []
        taken = [first]
        while True:
            try:
                taken.append(self._results.get_nowait())
            except queue.Empty:
                return taken

    def wake(self) -> None:
        """End a `finished` wait at once (a stop signal arrived): it hands back `(None, None)`."""
        self._results.put((None, None))

    def cancel_all(self) -> None:
        """Cancel every job still running; each comes back from `finished` as None."""
        self._loop.call_soon_threadsafe(self._cancel_tasks)

    def close(self) -> None:
        """Wait for pending `failed()` calls, then stop the loop and its thread."""
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self.runner.callbacks_done(), self._loop)
        try:
            future.result(timeout=30)
        except Exception:
            logger.exception("async failed() callbacks did not finish")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # On the loop's thread ---------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()
        self._loop.close()

    def _begin(self, held: Any, prepared: Prepared) -> None:
        task = self._loop.create_task(self.runner.finish_async(prepared, self.timeout))
        self._tasks[task] = held
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[Result]) -> None:
        held = self._tasks.pop(task)
        result: Result | None
        if task.cancelled():
            result = None
        elif task.exception() is not None:
            # finish_async turns every job error into a result; this is ours.
            logger.error(
                "an async job ended with an error of the worker", exc_info=task.exception()
            )
            result = None
        else:
            result = task.result()
        with self._lock:
            self._running -= 1
        self._results.put((held, result))

    def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
