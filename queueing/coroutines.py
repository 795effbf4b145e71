"""Awaiting a job's coroutine from code that is not itself async.

A job whose callback is `async def` (or returns anything awaitable) hands
back an awaitable instead of running; the runner must await it, or the job
would be reported done without having run. Each thread that runs jobs keeps
one `asyncio.Runner` (an event loop) and reuses it for every job, so
connections a job's services open on that loop stay usable. A thread whose
own loop is running already (a `sync` push from async code) cannot run a
second one, so the awaitable is run to the end on a helper thread instead,
and the caller waits for it, as it waits for any sync job.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_local = threading.local()
_helper: ThreadPoolExecutor | None = None
_helper_lock = threading.Lock()


def is_awaitable(value: Any) -> bool:
    """Whether `value` is something a job hands back to be awaited."""
    return inspect.isawaitable(value)


def run_to_end(awaitable: Awaitable[T]) -> T:
    """Await `awaitable` on this thread's event loop and return its result.

    An exception of the awaitable is raised here as itself. If the loop is
    interrupted (a timeout signal, a shutdown), it is closed, its tasks
    cancelled, and the next job gets a fresh one.
    """
    if _loop_running_here():
        return _on_helper_thread(awaitable)
    runner: asyncio.Runner | None = getattr(_local, "runner", None)
    if runner is None:
        runner = _local.runner = asyncio.Runner()
    try:
        return runner.run(_awaited(awaitable))
    except Exception:
        raise  # the job's own error: its loop is as good as before
    except BaseException:
        _discard_runner()
        raise


def close_this_thread() -> None:
    """Close the event loop this thread keeps for jobs, if any."""
    _discard_runner()


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _loop_running_here() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _on_helper_thread(awaitable: Awaitable[T]) -> T:
    global _helper
    with _helper_lock:
        if _helper is None:
            _helper = ThreadPoolExecutor(max_workers=4, thread_name_prefix="queue-await")
    return _helper.submit(run_to_end, awaitable).result()


def _discard_runner() -> None:
    runner: asyncio.Runner | None = getattr(_local, "runner", None)
    _local.runner = None
    if runner is not None:
        # A loop interrupted mid-run may fail to close cleanly; it is discarded anyway.
        with contextlib.suppress(Exception):
            runner.close()
