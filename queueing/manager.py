"""`Queue`, what application code asks the container for to push jobs."""

from __future__ import annotations

import asyncio
import copy
import inspect
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from queueing.clock import Clock, SystemClock
from queueing.delay import job_delay
from queueing.drivers.base import Driver
from queueing.job import Queueable
from queueing.payload import Envelope, Signer, seal


class UnknownDriverError(LookupError):
    """A driver name that is not configured."""


class Queue:
    """Pushes jobs to the configured default driver, or to another by name.

    Drivers are built on first use from the factories given, so configuring
    the amqp driver does not open a connection until something is pushed to
    it. `queue.driver("amqp")` returns a `Queue` that pushes there.
    """

    def __init__(
        self,
        drivers: Mapping[str, Callable[[], Driver]],
        default: str,
        signer: Signer,
        clock: Clock | None = None,
    ) -> None:
        if default not in drivers:
            raise UnknownDriverError(_unknown(default, drivers))
        self.default = default
        self.signer = signer
        self.clock = clock or SystemClock()
        self._factories = dict(drivers)
        self._drivers: dict[str, Driver] = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        """Return the configured driver names."""
        return list(self._factories)

    def driver(self, name: str | None = None) -> Queue:
        """Return a `Queue` whose pushes go to the driver `name`."""
        name = name or self.default
        if name not in self._factories:
            raise UnknownDriverError(_unknown(name, self._factories))
        view = copy.copy(self)
        view.default = name
        return view

    def connection(self, name: str | None = None) -> Driver:
        """Return the driver object `name` (the default when None), building it once."""
        name = name or self.default
        if name not in self._factories:
            raise UnknownDriverError(_unknown(name, self._factories))
        with self._lock:
            if name not in self._drivers:
                self._drivers[name] = self._factories[name]()
            return self._drivers[name]

    def push(
        self,
        *jobs: Any,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        wait: Any = None,
        channel: str | None = None,
        queue: str | None = None,
        callback: str = "handle",
    ) -> list[str]:
        """Queue each of `jobs` and return their ids.

        Each job is an uninstantiated `Queueable` class (built by the container
        of the process that runs it), a job instance (sent with its state), or
        any callable. `args` and `kwargs` go to the callback (`handle` unless
        `callback` names another method) or to the callable. `wait` delays the
        jobs, 49 days at most (`queueing.delay.job_delay`). `channel` picks the
        queue, or for the database driver the connection, as in the seed; `queue` names the queue
        explicitly. Every job is serialized and signed before any is queued, so
        a bad value queues nothing.
        """
        envelopes = self.prepare(
            jobs,
            args=args,
            kwargs=kwargs,
            wait=wait,
            channel=channel,
            queue=queue,
            callback=callback,
        )
        self.connection().push(envelopes, channel)
        return [envelope.id for envelope in envelopes]

    async def apush(
        self,
        *jobs: Any,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        wait: Any = None,
        channel: str | None = None,
        queue: str | None = None,
        callback: str = "handle",
    ) -> list[str]:
        """`push` for async code: same arguments, ids and errors, and the loop keeps running.

        The jobs are checked and signed at once, on the loop (so a bad value
        raises before anything waits); the driver's blocking push then runs
        on a thread of the loop's default executor while other tasks go on.
        """
        envelopes = self.prepare(
            jobs,
            args=args,
            kwargs=kwargs,
            wait=wait,
            channel=channel,
            queue=queue,
            callback=callback,
        )
        driver = self.connection()
        await asyncio.to_thread(driver.push, envelopes, channel)
        return [envelope.id for envelope in envelopes]

    def prepare(
        self,
        jobs: tuple[Any, ...],
        *,
        args: Iterable[Any],
        kwargs: Mapping[str, Any] | None,
        wait: Any,
        channel: str | None,
        queue: str | None,
        callback: str,
    ) -> list[Envelope]:
        """Check, serialize and sign `jobs` into envelopes without queueing them."""
        if not jobs:
            raise ValueError("push() needs at least one job")
        if not isinstance(callback, str) or not callback.isidentifier():
            raise ValueError(f"callback must be a method name, not {callback!r}")
        if isinstance(args, str | bytes) or not isinstance(args, Iterable):
            raise ValueError(f"args must be a list or tuple of arguments, not {args!r}")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise ValueError(f"kwargs must be a dict, not {kwargs!r}")
        for job in jobs:
            _check_job(job)
        now = self.clock.now()
        delay = job_delay(wait, now)
        driver = self.connection()
        queue_name = driver.queue_for(channel, queue)
        return [
            seal(
                self.signer,
                job,
                args=tuple(args),
                kwargs=dict(kwargs or {}),
                callback=callback,
                queue=queue_name,
                driver=driver.name,
                now=now,
                delay=delay,
            )
            for job in jobs
        ]

    def close(self) -> None:
        """Close every driver that was built."""
        with self._lock:
            drivers, self._drivers = list(self._drivers.values()), {}
        for driver in drivers:
            driver.close()


def _check_job(job: Any) -> None:
    if inspect.iscoroutine(job):
        job.close()  # it will never run: no "never awaited" warning either
        raise ValueError(
            f"cannot queue the coroutine {job.__qualname__}(): push the function, "
            "not the coroutine it returned (queue.push(send_mail), not send_mail())"
        )
    if isinstance(job, (type, Queueable)) or callable(job):
        return
    raise ValueError(f"cannot queue {job!r}: push a job class, a job instance or a callable")


def _unknown(name: str, configured: Iterable[str]) -> str:
    return f"unknown queue driver {name!r}; configured drivers: {', '.join(sorted(configured))}"
