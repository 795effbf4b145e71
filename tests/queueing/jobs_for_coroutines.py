"""Async jobs of every kind, for the tests that check they are awaited on every driver.

Each leaves a line in the file it is given, after an `await`, so a line
proves the coroutine ran to its end. Worker processes import this module
(the repository root is on their PYTHONPATH).
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Awaitable, Callable
from typing import Any

from queueing import Queueable


def note(path: str, text: str) -> None:
    """Append one line to `path`."""
    with open(path, "a", encoding="utf-8") as file:
        file.write(text + "\n")


class Greeting:
    """A service the container builds for the async jobs that ask for it."""

    word = "hello"


class AsyncHandle(Queueable):
    """`async def handle`, with a constructor service and a `handle` service."""

    def __init__(self, greeting: Greeting) -> None:
        self.greeting = greeting

    async def handle(self, path: str, name: str, again: Greeting) -> None:
        """Await, then note the greeting from both services."""
        await asyncio.sleep(0)
        note(path, f"{self.greeting.word} {name} {again.word}")


class AsyncFails(Queueable):
    """Fails every attempt; its `failed()` is async too."""

    retry_delay = 0

    async def handle(self, path: str) -> None:
        """Await, note the attempt, raise."""
        await asyncio.sleep(0)
        note(path, "attempt")
        raise RuntimeError("the async job failed")

    async def failed(self, payload: dict[str, Any], error: BaseException) -> None:
        """Await, then note the call."""
        await asyncio.sleep(0)
        note(payload["args"][0], f"failed: {error}")


async def async_function(path: str, name: str) -> None:
    """A plain `async def` function job."""
    await asyncio.sleep(0)
    note(path, f"function {name}")


class Mailer:
    """Has an async method that is pushed bound."""

    def __init__(self, sender: str) -> None:
        self.sender = sender

    async def send(self, path: str, name: str) -> None:
        """Await, then note who sent to whom."""
        await asyncio.sleep(0)
        note(path, f"{self.sender} to {name}")


def async_closure(prefix: str) -> Callable[[str, str], Awaitable[None]]:
    """Return an `async def` closure over `prefix`."""

    async def write(path: str, name: str) -> None:
        await asyncio.sleep(0)
        note(path, f"{prefix} {name}")

    return write


def async_partial() -> functools.partial[Awaitable[None]]:
    """A `functools.partial` of an async function, its first argument bound."""
    return functools.partial(_partial_target, "partial")


async def _partial_target(label: str, path: str, name: str) -> None:
    await asyncio.sleep(0)
    note(path, f"{label} {name}")


def kinds() -> dict[str, tuple[Any, str]]:
    """Every kind of async job: what to push, and the line it leaves for name 'ada'."""
    return {
        "async handle": (AsyncHandle, "hello ada hello"),
        "async function": (async_function, "function ada"),
        "async bound method": (Mailer("bob").send, "bob to ada"),
        "async closure": (async_closure("closed"), "closed ada"),
        "partial of async": (async_partial(), "partial ada"),
    }


class Sleeps(Queueable):
    """Awaits far longer than any test waits: only a timeout or a cancel ends it."""

    run_again_on_fail = False

    async def handle(self, path: str) -> None:
        """Note the start, then sleep an hour."""
        note(path, "started")
        await asyncio.sleep(3600)


class Session:
    """A scoped service: one per job, closed once the job settled."""

    opened: list[Session] = []

    def __init__(self) -> None:
        self.closed = False
        Session.opened.append(self)

    def close(self) -> None:
        """Close it; the test looks at this."""
        self.closed = True


class UsesSession(Queueable):
    """Gets the session in its constructor and in `handle`: it must be the same one."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def handle(self, path: str, again: Session) -> None:
        """Note whether both are one object, and whether it is still open."""
        note(path, f"same={again is self.session} open={not again.closed}")


class UsesSessionAsync(UsesSession):
    """The same, awaited on an event loop."""

    async def handle(self, path: str, again: Session) -> None:  # type: ignore[override]
        """Await, then note as the sync one does."""
        await asyncio.sleep(0)
        note(path, f"same={again is self.session} open={not again.closed}")


_MEETINGS: dict[str, asyncio.Event] = {}
_ARRIVED: dict[str, int] = {}


class Rendezvous(Queueable):
    """Waits until `size` jobs of the same `meeting` are running at once, then ends.

    With fewer than `size` in flight at a time it could never end: it gives up
    after 60 s (and fails), so a test sees the lack of concurrency as a failure.
    Each test names its own meeting, so no test sees another's arrivals.
    """

    run_again_on_fail = False

    async def handle(self, path: str, size: int, meeting: str) -> None:
        """Arrive, wait for the others, note the end."""
        event = _MEETINGS.setdefault(meeting, asyncio.Event())
        _ARRIVED[meeting] = _ARRIVED.get(meeting, 0) + 1
        if _ARRIVED[meeting] >= size:
            event.set()
        await asyncio.wait_for(event.wait(), timeout=60)
        note(path, "met")


class HangsOnFirstRun(Queueable):
    """On its first run notes `started` and awaits for ever; on a later run notes `ran`."""

    async def handle(self, directory: str, name: str) -> None:
        """Hang the first time (a marker file tells), finish the next."""
        marker = f"{directory}/{name}.started"
        try:
            with open(marker, "x", encoding="utf-8"):
                pass
        except FileExistsError:
            note(f"{directory}/ran.txt", name)
            return
        await asyncio.sleep(3600)


class QuickAsync(Queueable):
    """Ends at once, leaving its name."""

    async def handle(self, directory: str, name: str) -> None:
        """Note the name."""
        await asyncio.sleep(0)
        note(f"{directory}/ran.txt", name)


class SwallowsCancel(Queueable):
    """Catches the cancellation of its timeout and goes on to its end."""

    run_again_on_fail = False

    async def handle(self, path: str) -> None:
        """Sleep long; on cancel, note it and finish anyway."""
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            note(path, "swallowed")


class AsyncKillsItsWorker(Queueable):
    """An async job that ends its worker process the moment it runs."""

    async def handle(self, path: str) -> None:
        """Note the run, then exit the process at once."""
        note(path, "poison")
        os._exit(1)


def returns_a_coroutine(path: str, name: str) -> Awaitable[None]:
    """A plain function whose result is awaitable: the runner must await it."""
    return async_function(path, name)


def notes_its_thread(path: str) -> None:
    """A sync job: note the name of the thread it runs on."""
    import threading

    note(path, threading.current_thread().name)
