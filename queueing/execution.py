"""The one execution path: how any driver runs a job and decides what happens next.

`JobRunner.run` takes one attempt of an envelope: it verifies and loads the
body, builds the job (an uninstantiated class is made by this process's
container), calls its callback through the container, and reports an
`Outcome`. Retry counting, delays, the `failed()` callback and the failed-job
store are decided here, once, for every driver; drivers only move envelopes.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import inspect
import logging
import pickle
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from container import Container, ResolutionError
from queueing.clock import Clock, SystemClock
from queueing.coroutines import is_awaitable, run_to_end
from queueing.failed import FailedJob, FailedJobStore
from queueing.job import Fail, JobFailedByItself, Queueable, Release, retry_policy, take_decision
from queueing.payload import CorruptPayloadError, Envelope, ForgedPayloadError, Signer

logger = logging.getLogger("queueing.execution")


class Outcome(enum.StrEnum):
    """What became of one attempt."""

    DONE = "done"
    RETRY = "retry"
    # The job asked to go back on its queue (`self.release`): no attempt spent.
    RELEASED = "released"
    FAILED = "failed"
    PARKED = "parked"


class Interrupted(BaseException):
    """Raised inside a running job by the worker; a BaseException so jobs do not swallow it."""


class TimedOut(Interrupted):
    """The job ran past the worker's `--timeout`: the attempt fails."""


class ShuttingDown(Interrupted):
    """The worker is stopping and its grace period ended: the job goes back unspent."""


class JobError(Exception):
    """A job cannot be run as pushed (no such callback, nothing callable)."""


# Errors that no later attempt can mend: the job as pushed cannot be built or
# called. They fail the job at once instead of spending its retries.
CANNOT_SUCCEED: tuple[type[Exception], ...] = (JobError, ResolutionError)


class WorkerDiedError(RuntimeError):
    """Every attempt the job was allowed ended with its worker dying mid-job.

    Attempts are counted when a job is handed to a worker, so a reservation
    that counts more attempts than the job is allowed means earlier ones
    never reported back: the process running them was killed, crashed or
    exited. Such a job is failed instead of run again.
    """


@dataclass
class Result:
    """The outcome of one attempt, small enough to send between processes.

    `error` holds the exception itself only in the process that ran the job;
    `error_text` and `traceback` travel everywhere. `failure` is the record
    to store when the job failed for good or was refused (None when a copy
    of this job's failure is stored already).
    """

    envelope: Envelope
    outcome: Outcome
    duration: float
    retry_in: float = 0.0
    error_text: str = ""
    traceback: str = ""
    error: BaseException | None = field(default=None, compare=False)
    failure: FailedJob | None = field(default=None, compare=False)
    # Attempts the job gets in all, when it was read (for `retry 2/3`).
    attempts_allowed: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        # The exception goes along when it pickles (the blocking async driver
        # re-raises it in the pushing process); the text always does.
        if state["error"] is not None:
            try:
                pickle.loads(pickle.dumps(state["error"]))
            except Exception:
                state["error"] = None
        return state

    def again(self, now: float) -> Envelope | None:
        """The envelope to queue once more after this attempt, or None when it settled.

        A retry keeps the attempt it spent; a release gives it back.
        """
        if self.outcome is Outcome.RETRY:
            return self.envelope.later(now + self.retry_in)
        if self.outcome is Outcome.RELEASED:
            envelope = replace(self.envelope, attempts=max(0, self.envelope.attempts - 1))
            return envelope.later(now + self.retry_in)
        return None


# Set inside `finish_async`: an async `failed()` is then awaited on the same loop.
_ON_JOB_LOOP: contextvars.ContextVar[bool] = contextvars.ContextVar("on_job_loop", default=False)


@dataclass
class Prepared:
    """A job verified and loaded, not built yet: what `JobRunner.finish` runs."""

    envelope: Envelope
    job: dict[str, Any]
    started: float
    # Attempts the job gets in all (its `run_times`, or 1 for a plain callable).
    allowed: int = 1

    @property
    def args(self) -> tuple[Any, ...]:
        """The positional arguments pushed with the job."""
        return tuple(self.job["args"])

    @property
    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments pushed with the job."""
        return dict(self.job["kwargs"])

    @property
    def is_async(self) -> bool:
        """Whether the callback is a coroutine function (`async def`, or a partial of one).

        Read from the job's class or object without building it, so the
        worker knows before anything runs whether it belongs on the loop.
        """
        obj = self.job["obj"]
        target = getattr(obj, self.job["callback"], None)
        if target is None and callable(obj) and not isinstance(obj, type):
            target = obj
        if target is None:
            return False
        # A bound method's function is the same object job after job: ask once.
        key = getattr(target, "__func__", target)
        try:
            known = _ASYNC_CALLBACKS.get(key)
        except TypeError:  # unhashable
            known, key = None, None
        if known is not None:
            return known
        answer = inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
            getattr(target, "__call__", None)  # noqa: B004 - an object whose __call__ is async
        )
        if key is not None:
            if len(_ASYNC_CALLBACKS) >= 4096:
                _ASYNC_CALLBACKS.clear()  # functions unpickled by value are new each job
            _ASYNC_CALLBACKS[key] = answer
        return answer


# Callback functions -> whether they are coroutine functions (see `Prepared.is_async`).
_ASYNC_CALLBACKS: dict[Any, bool] = {}


class JobRunner:
    """Runs attempts of envelopes with the retry and failure policy of the queue."""

    def __init__(
        self,
        container: Container,
        signer: Signer,
        failed_store: FailedJobStore,
        clock: Clock | None = None,
    ) -> None:
        self.container = container
        self.signer = signer
        self.failed_store = failed_store
        self.clock = clock or SystemClock()
        self._callbacks: set[asyncio.Future[None]] = set()

    def run(self, envelope: Envelope) -> Result:
        """Run one attempt of `envelope` (its `attempts` counts it) and store any failure."""
        result = self.attempt(envelope)
        self.record(result)
        return result

    def record(self, result: Result) -> None:
        """Store the failure `result` ended with, if any (the log takes it if the store fails)."""
        if result.failure is not None:
            self._store(result.failure)

    def attempt(self, envelope: Envelope) -> Result:
        """Run one attempt of `envelope` like `run`, leaving the failure to store in the result.

        For a worker that stores it together with removing the job.
        """
        prepared = self.prepare(envelope)
        return prepared if isinstance(prepared, Result) else self.finish(prepared)

    def prepare(self, envelope: Envelope) -> Prepared | Result:
        """Verify and load the job: a `Prepared` to run, or the result if it ends here.

        A refused payload and a job whose attempts its dead workers used up
        end here. Nothing of the job is built yet: `finish` (in this thread)
        or `finish_async` (on an event loop) builds and calls it inside one
        container scope, so `Prepared.is_async` tells where it belongs.
        """
        started = time.perf_counter()
        try:
            job = self.signer.load(envelope.body)
        except (ForgedPayloadError, CorruptPayloadError) as refusal:
            return self._park(envelope, refusal, started)
        allowed = _attempts_allowed(job["obj"])
        if envelope.attempts > allowed:
            result = self._died_too_often(envelope, job, allowed, started)
            result.attempts_allowed = allowed
            return result
        return Prepared(envelope, job, started, allowed)

    def finish(self, prepared: Prepared) -> Result:
        """Build and call a prepared job in this thread (awaiting it if async); decide what next."""
        with self.container.scope():
            instance = None
            try:
                instance, function = self._build(prepared)
                value = self.container.call(function, *prepared.args, **prepared.kwargs)
                if is_awaitable(value):
                    run_to_end(value)
            except TimedOut as timeout:
                error = TimeoutError(str(timeout))
                error.__traceback__ = timeout.__traceback__
                return self._decided_for(prepared, instance, error)
            except Exception as error:
                return self._decided_for(prepared, instance, error)
            return self._decided_for(prepared, instance, None)

    async def finish_async(self, prepared: Prepared, timeout: float | None = None) -> Result:
        """Build and call a prepared job on the running event loop, awaiting it; decide what next.

        `timeout` cancels the job after that many seconds; the attempt then
        fails with a "timed out" error. An async `failed()` is awaited here too.
        """
        _ON_JOB_LOOP.set(True)
        with self.container.scope():
            result = await self._await_job(prepared, timeout)
            await self.callbacks_done()
            return result

    async def _await_job(self, prepared: Prepared, timeout: float | None) -> Result:
        instance = None
        try:
            async with asyncio.timeout(timeout) as limit:
                instance, function = self._build(prepared)
                value = self.container.call(function, *prepared.args, **prepared.kwargs)
                if is_awaitable(value):
                    await value
            if limit.expired():
                # The job caught the cancellation and went on to its end.
                logger.warning(
                    "job %s (%s) swallowed its cancellation at the %gs timeout and ran on",
                    prepared.envelope.id,
                    prepared.envelope.name,
                    timeout,
                )
                return self._decided_for(
                    prepared, instance, TimeoutError(f"job timed out after {timeout:g}s")
                )
        except TimeoutError as error:
            if timeout is None or not _ran_out(error):
                return self._decided_for(prepared, instance, error)
            timed_out = TimeoutError(f"job timed out after {timeout:g}s")
            timed_out.__traceback__ = error.__traceback__
            return self._decided_for(prepared, instance, timed_out)
        except Exception as error:
            return self._decided_for(prepared, instance, error)
        return self._decided_for(prepared, instance, None)

    def _build(self, prepared: Prepared) -> tuple[Any, Callable[..., Any]]:
        """The job's instance (an uninstantiated class built by the container) and what to call."""
        obj = prepared.job["obj"]
        instance = self.container.make(obj) if isinstance(obj, type) else obj
        function = self._callable(instance, prepared.job["callback"], prepared.envelope.name)
        take_decision(instance)  # one made before the push is not this attempt's
        return instance, function

    def _decided_for(self, prepared: Prepared, instance: Any, error: Exception | None) -> Result:
        result = self._decided(prepared.envelope, prepared.job, instance, prepared.started, error)
        result.attempts_allowed = prepared.allowed
        return result

    def _decided(
        self,
        envelope: Envelope,
        job: dict[str, Any],
        instance: Any,
        started: float,
        error: Exception | None,
    ) -> Result:
        """The outcome of an attempt: the job's own decision first, then its error if any."""
        decision = take_decision(instance)
        if isinstance(decision, Release):
            text = f"{type(error).__name__}: {error}" if error is not None else ""
            return Result(
                envelope, Outcome.RELEASED, time.perf_counter() - started, decision.delay, text
            )
        if isinstance(decision, Fail):
            failure = decision.error
            if not isinstance(failure, Exception):
                failure = JobFailedByItself(str(failure))
            return self._after_error(envelope, job, instance, failure, started, final=True)
        if error is not None:
            return self._after_error(envelope, job, instance, error, started)
        return Result(envelope, Outcome.DONE, time.perf_counter() - started)

    def run_until_settled(
        self,
        envelope: Envelope,
        report: Callable[[Result], None] | None = None,
        attempt: Callable[[Envelope], Result] | None = None,
    ) -> Result:
        """Run `envelope` to the end in this thread, sleeping out its wait and retry delays.

        `attempt` runs one attempt (default: `run` here); `report` sees every result.
        """
        attempt = attempt or self.run
        self.clock.sleep(envelope.available_at - self.clock.now())
        while True:
            result = attempt(envelope.started())
            if report is not None:
                report(result)
            again = result.again(self.clock.now())
            if again is None:
                return result
            self.clock.sleep(again.available_at - self.clock.now())
            envelope = again

    def abandon(self, envelope: Envelope, error: Exception) -> Result:
        """Settle an attempt that ended without a result (its process died, it timed out).

        The attempt counts; the job's retry policy decides between a retry and
        failure, but `failed()` is not called, since no instance of the job
        survives in this process.
        """
        started = time.perf_counter()
        try:
            job = self.signer.load(envelope.body)
        except (ForgedPayloadError, CorruptPayloadError) as refusal:
            result = self._park(envelope, refusal, started)
        else:
            result = self._after_error(envelope, job, None, error, started)
        self.record(result)
        return result

    # Steps ------------------------------------------------------------------------

    @staticmethod
    def _callable(instance: Any, callback: str, name: str) -> Callable[..., Any]:
        # Looked up before the call, so an AttributeError raised *inside* the
        # callback is reported as itself, never as a missing method.
        method = getattr(instance, callback, None)
        if callable(method):
            return method
        if isinstance(instance, Queueable):
            raise JobError(f"job {name} has no method {callback!r} to run")
        if callable(instance):
            return instance
        raise JobError(f"{name} is not callable and has no method {callback!r}")

    def _after_error(
        self,
        envelope: Envelope,
        job: dict[str, Any],
        instance: Any,
        error: Exception,
        started: float,
        final: bool = False,
    ) -> Result:
        """Retry the attempt or fail the job for good; `final` rules a retry out."""
        duration = time.perf_counter() - started
        text = f"{type(error).__name__}: {error}"
        trace = "".join(traceback.format_exception(error))
        # The built instance governs when there is one; otherwise the job's
        # class does, looked up only now since a job that succeeds never needs it.
        policy = instance if isinstance(instance, Queueable) else retry_policy(job["obj"])
        if (
            not final
            and policy is not None
            and envelope.attempts < policy.attempts_allowed()
            and not isinstance(error, CANNOT_SUCCEED)
            and policy.retries(error)
        ):
            delay = policy.delay_before_retry(envelope.attempts)
            return Result(envelope, Outcome.RETRY, duration, delay, text, trace, error)

        if self._stored_already(envelope):
            return self._failed_before(envelope, duration)
        if isinstance(instance, Queueable):
            self._call_failed(instance, self._failed_payload(envelope, job), error)
        elif policy is not None:
            _not_built(envelope, text)
        failure = FailedJob.from_error(envelope, error, self.clock.now())
        return Result(envelope, Outcome.FAILED, duration, 0.0, text, trace, error, failure)

    def _stored_already(self, envelope: Envelope) -> bool:
        """Whether this job's failure is stored: this is a copy delivered again after it."""
        stored = getattr(self.failed_store, "has_failure", None)
        if stored is None:
            return False
        try:
            return bool(stored(envelope.id))
        except Exception:
            logger.exception("could not look whether job %s failed before", envelope.id)
            return False

    def _failed_before(self, envelope: Envelope, duration: float) -> Result:
        """The result for a copy of a job whose failure is stored: settled, nothing called again."""
        logger.warning(
            "job %s (%s) came again after its failure was stored; "
            "failed() is not called again and no second record is stored",
            envelope.id,
            envelope.name,
        )
        text = "FailedBefore: this job's failure was stored already"
        return Result(envelope, Outcome.FAILED, duration, 0.0, text)

    def _died_too_often(
        self, envelope: Envelope, job: dict[str, Any], allowed: int, started: float
    ) -> Result:
        """Fail a job whose allowed attempts all ended with the worker dying, without running it."""
        spent = envelope.attempts - 1
        error = WorkerDiedError(
            f"the worker died while running it (attempt {spent} of {allowed}); "
            f"its {allowed} attempt(s) are used up, so it is not run again"
        )
        # The attempt about to start never runs: the record counts those spent.
        envelope = replace(envelope, attempts=spent)
        if self._stored_already(envelope):
            return self._failed_before(envelope, time.perf_counter() - started)
        obj = job["obj"]
        with self.container.scope():
            instance: Any = obj
            if isinstance(obj, type) and issubclass(obj, Queueable):
                try:
                    instance = self.container.make(obj)
                except Exception as build_error:
                    _not_built(envelope, build_error)
                    instance = None
            if isinstance(instance, Queueable):
                self._call_failed(instance, self._failed_payload(envelope, job), error)
        failure = FailedJob.from_error(envelope, error, self.clock.now(), reason="died")
        text = f"{type(error).__name__}: {error}"
        duration = time.perf_counter() - started
        return Result(envelope, Outcome.FAILED, duration, 0.0, text, "", error, failure)

    def _park(self, envelope: Envelope, refusal: Exception, started: float) -> Result:
        """Park a refused payload unloaded: its failure record carries the reason.

        Nothing is logged here: whoever runs the attempt reports the result
        (the worker in one line), so a parked payload is told once.
        """
        reason = getattr(refusal, "reason", "corrupt")
        return Result(
            envelope,
            Outcome.PARKED,
            time.perf_counter() - started,
            0.0,
            f"{type(refusal).__name__}: {refusal}",
            "",
            refusal,
            FailedJob.from_error(envelope, refusal, self.clock.now(), reason=reason),
        )

    def _call_failed(self, instance: Queueable, payload: dict[str, Any], error: Exception) -> None:
        try:
            failed: Callable[..., Any] = instance.failed  # may be async def
            value = failed(payload, error)
            if is_awaitable(value):
                if _ON_JOB_LOOP.get():
                    # On a worker's event loop: await it there, beside the other jobs.
                    task = asyncio.ensure_future(self._failed_callback(value, payload))
                    self._callbacks.add(task)
                    return
                run_to_end(value)
        except Exception:
            logger.exception("failed() of job %s raised; the worker goes on", payload["id"])

    async def _failed_callback(self, value: Any, payload: dict[str, Any]) -> None:
        try:
            await value
        except Exception:
            logger.exception("failed() of job %s raised; the worker goes on", payload["id"])

    async def callbacks_done(self) -> None:
        """Wait for the async `failed()` calls started on this loop (a worker, before exit)."""
        while self._callbacks:
            pending = [task for task in self._callbacks if not task.done()]
            self._callbacks = {task for task in self._callbacks if not task.done()}
            if not pending:
                return
            await asyncio.wait(pending)

    def _store(self, failure: FailedJob) -> None:
        try:
            self.failed_store.store(failure)
        except Exception:
            logger.exception(
                "could not store failed job %s; its details follow in the log",
                failure.envelope.id,
            )
            logger.error("failed job %s: %s", failure.envelope.metadata(), failure.traceback)

    @staticmethod
    def _failed_payload(envelope: Envelope, job: dict[str, Any]) -> dict[str, Any]:
        return {
            "obj": job["obj"],
            "args": job["args"],
            "kwargs": job["kwargs"],
            "callback": job["callback"],
            "created": job["created"],
            "ran": envelope.attempts,
            "id": envelope.id,
            "name": envelope.name,
            "queue": envelope.queue,
            "driver": envelope.driver,
        }


def _attempts_allowed(obj: Any) -> int:
    """How many attempts `obj` gets in all: its policy's for a `Queueable`, else one."""
    policy = retry_policy(obj)
    return policy.attempts_allowed() if policy is not None else 1


def _ran_out(error: TimeoutError) -> bool:
    """Whether `error` came from `asyncio.timeout` itself, not from inside the job."""
    return isinstance(error.__cause__, asyncio.CancelledError)


def _not_built(envelope: Envelope, error: object) -> None:
    """Log that a Queueable's `failed()` cannot be called: the job could not be built."""
    logger.error(
        "job %s (%s): failed() not called, the job could not be built: %s",
        envelope.id,
        envelope.name,
        error,
    )
