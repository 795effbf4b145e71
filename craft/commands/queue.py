"""`craft queue:*`: run workers, and inspect, retry and clear queues."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import click
import pendulum

from craft.application import make
from craft.errors import CraftError, explain
from craft.supervisor import Supervisor, announce_ready, worker_number
from queueing import FailedJobStore, JobRunner, MissingKeyError, Queue, UnknownDriverError
from queueing.delay import seconds_to_wait
from queueing.drivers.base import Driver, DriverUnavailableError
from queueing.failed import DatabaseFailedJobStore, FailedJobBusyError, FailedTableMissingError
from queueing.operations import NoSuchFailedJobError, retry_failed
from queueing.reporting import short_name
from queueing.worker import ReservingDriver, Worker, WorkerOptions


def _queue() -> Queue:
    return make(Queue)


def _driver(name: str | None) -> Driver:
    try:
        return _queue().connection(name)
    except UnknownDriverError as error:
        raise CraftError(str(error)) from error


def _store() -> DatabaseFailedJobStore:
    store = make(FailedJobStore)
    if not isinstance(store, DatabaseFailedJobStore):
        raise CraftError(
            "failed jobs are not stored: add DatabaseProvider to PROVIDERS in "
            "config/application.py, then run craft queue:table --failed and craft migrate"
        )
    return store


def _run(action: Callable[[], Any]) -> Any:
    """Run a library call, turning the errors an operator can fix into one line."""
    try:
        return action()
    except (
        DriverUnavailableError,
        FailedJobBusyError,
        FailedTableMissingError,
        MissingKeyError,
        NoSuchFailedJobError,
        UnknownDriverError,
    ) as error:
        raise CraftError(explain(error)) from error


def _echo_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [
        max([len(header), *(len(row[i]) for row in cells)]) for i, header in enumerate(headers)
    ]
    for row in [list(headers), *cells]:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


class Seconds(click.ParamType):
    """A number of seconds, above zero (or at least zero with `allow_zero`)."""

    name = "seconds"

    def __init__(self, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        """Read `value` as seconds, or fail saying what is expected."""
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = math.nan
        if not math.isfinite(seconds):
            self.fail(f"{value!r} must be a number of seconds", param, ctx)
        if seconds < 0 or (seconds == 0 and not self.allow_zero):
            least = "0 or more" if self.allow_zero else "above 0"
            self.fail(f"{value!r} must be a number of seconds, {least}", param, ctx)
        return seconds


# The worker ---------------------------------------------------------------------------


@click.command("queue:work")
@click.option("--driver", "-d", default=None, help="Driver to work (default: DRIVER).")
@click.option("--channel", "-c", default=None, help="amqp: the queue; database: the connection.")
@click.option(
    "--queue",
    "-q",
    "queues",
    default=None,
    help="Queues to take from, in priority order: high,default.",
)
@click.option(
    "--failed", is_flag=True, help="Put every stored failed job of this driver back, then exit."
)
@click.option(
    "--stop-when-empty",
    is_flag=True,
    help="Exit once the queues hold nothing left to run, delayed jobs and retries included.",
)
@click.option("--max-jobs", type=click.IntRange(min=1), default=None, help="Exit after N jobs.")
@click.option(
    "--max-time",
    type=Seconds(),
    default=None,
    help="Exit after S seconds.",
)
@click.option(
    "--timeout",
    type=Seconds(),
    default=None,
    help="Fail a job running longer than S seconds.",
)
@click.option(
    "--sleep",
    type=Seconds(allow_zero=True),
    default=1.0,
    show_default=True,
    help="Seconds to wait when no job is due.",
)
@click.option(
    "--grace",
    type=Seconds(allow_zero=True),
    default=30.0,
    show_default=True,
    help="Seconds the job in hand may finish after SIGTERM.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes to run (each runs one sync job at a time).",
)
@click.option(
    "--async-concurrency",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Async jobs (async def handle) each process runs at once on its event loop; "
    "0 runs them one at a time like sync jobs.",
)
@click.option("--quiet", is_flag=True, help="Print only errors.")
def queue_work(
    driver: str | None,
    channel: str | None,
    queues: str | None,
    failed: bool,
    stop_when_empty: bool,
    max_jobs: int | None,
    max_time: float | None,
    timeout: float | None,
    sleep: float,
    grace: float,
    concurrency: int,
    async_concurrency: int,
    quiet: bool,
) -> None:
    """Run a worker: take jobs and run them until stopped (SIGTERM/SIGINT)."""
    if concurrency > 1 and not failed:
        sys.exit(_supervise(concurrency, click.get_current_context().params))
    target = _driver(driver)
    if failed:
        requeued = _run(
            lambda: retry_failed(_store(), _queue().driver(target.name), driver=target.name)
        )
        click.echo(f"put {len(requeued)} failed job(s) back on their queues")
        return
    if not hasattr(target, "reserve"):
        raise CraftError(
            f"the {target.name} driver runs jobs in the process that pushes them; "
            "a worker serves the database and amqp drivers"
        )
    names = [name.strip() for name in (queues or "").split(",") if name.strip()]
    number = worker_number()
    options = WorkerOptions(
        queues=names or [target.queue_for(channel, None)],
        channel=channel,
        stop_when_empty=stop_when_empty,
        max_jobs=max_jobs,
        max_time=max_time,
        timeout=timeout,
        sleep=sleep,
        grace=grace,
        quiet=quiet,
        process=f"worker {number}" if number else None,
        async_concurrency=async_concurrency,
    )
    runner = make(JobRunner)
    _run(runner.signer.require_key)
    check = getattr(target, "check", None)
    if check is not None:
        _run(lambda: check(channel))
    announce_ready()
    if not quiet:
        click.echo(
            f"worker {os.getpid()} on {target.name}"
            + (f" ({channel})" if channel else "")
            + f", queues: {', '.join(options.queues)}"
            + (f" (supervised as worker {number})" if number else "")
        )
    try:
        code = _run(Worker(cast(ReservingDriver, target), runner, options).run)
    finally:
        # Gives back jobs reserved ahead of time and closes the broker connections.
        target.close()
    sys.exit(code)


def _supervise(concurrency: int, params: dict[str, Any]) -> int:
    """Run `concurrency` worker processes with the same options, replacing any that dies."""
    arguments = ["queue:work"]
    for name, value in params.items():
        if name == "concurrency" or value is None or value is False:
            continue
        option = "--queue" if name == "queues" else "--" + name.replace("_", "-")
        arguments += [option] if value is True else [option, str(value)]
    target = _driver(params["driver"])
    release = getattr(target, "release_held_by", None)
    channel = params["channel"]
    supervisor = Supervisor(
        concurrency,
        arguments,
        release_held_by=(lambda pid: release(pid, channel)) if release is not None else None,
    )
    try:
        return supervisor.run()
    finally:
        target.close()


# Failed jobs ----------------------------------------------------------------------------


@click.command("queue:failed")
@click.option("--queue", "-q", default=None, help="Only this queue.")
@click.option("--job", "-j", default=None, help="Only this job (class or dotted name).")
@click.option("--since", default=None, help="Only failures since: '2 hours' (ago) or an ISO date.")
@json_option
def queue_failed(queue: str | None, job: str | None, since: str | None, as_json: bool) -> None:
    """List stored failed jobs."""
    since_at = _since(since) if since else None
    failures = _run(lambda: _store().all(queue=queue, name=job, since=since_at))
    if as_json:
        click.echo(json.dumps([failure.summary() for failure in failures], indent=2))
        return
    if not failures:
        click.echo("no failed jobs")
        return
    rows = []
    for failure in failures:
        summary = failure.summary()
        exception = str(summary["exception"])
        rows.append(
            [
                failure.id,
                short_name(failure.name),
                failure.queue,
                failure.driver,
                exception if len(exception) <= 60 else exception[:57] + "...",
                str(summary["failed_at"])[:19].replace("T", " "),
            ]
        )
    _echo_table(["id", "job", "queue", "driver", "exception", "failed at (UTC)"], rows)


def _since(text: str) -> Any:
    # A date is read as that moment; only a duration counts back from now
    # (seconds_to_wait would read a date as a wait until it).
    try:
        moment = pendulum.parse(text, tz="UTC")
    except (ValueError, pendulum.parsing.exceptions.ParserError):
        moment = None
    if isinstance(moment, dt.datetime):
        return moment
    try:
        return pendulum.now("UTC").subtract(seconds=seconds_to_wait(text, time.time()))
    except ValueError as error:
        raise CraftError(f"cannot read --since {text!r}: give '2 hours' or an ISO date") from error


@click.command("queue:retry")
@click.argument("ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Retry every failed job.")
@json_option
def queue_retry(ids: tuple[str, ...], everything: bool, as_json: bool) -> None:
    """Put failed jobs (by id or uuid, or --all) back on their queues."""
    if not ids and not everything:
        raise CraftError("name the failed job ids to retry, or pass --all")
    if ids and everything:
        raise CraftError("give ids or --all, not both")
    requeued = _run(lambda: retry_failed(_store(), _queue(), None if everything else ids))
    if as_json:
        click.echo(json.dumps([failure.summary() for failure in requeued], indent=2))
        return
    for failure in requeued:
        click.echo(f"retrying {failure.id} ({failure.name}) on {failure.driver}:{failure.queue}")
    if not requeued:
        click.echo("no failed jobs to retry")


@click.command("queue:forget")
@click.argument("identifier")
@json_option
def queue_forget(identifier: str, as_json: bool) -> None:
    """Delete one failed job (by id or uuid)."""
    if not _run(lambda: _store().forget(identifier)):
        raise CraftError(f"no failed job with id {identifier!r}")
    _report(as_json, {"forgotten": identifier}, f"forgot failed job {identifier}")


@click.command("queue:flush")
@json_option
def queue_flush(as_json: bool) -> None:
    """Delete every failed job."""
    count = _run(lambda: _store().flush())
    _report(as_json, {"deleted": count}, f"deleted {count} failed job(s)")


def _report(as_json: bool, data: dict[str, Any], text: str) -> None:
    click.echo(json.dumps(data) if as_json else text)


# Pending jobs ---------------------------------------------------------------------------


@click.command("queue:clear")
@click.option("--driver", "-d", default=None, help="Driver (default: DRIVER).")
@click.option("--channel", "-c", default=None, help="amqp: the queue; database: the connection.")
@click.option(
    "--queue",
    "-q",
    default=None,
    help="Only this queue (default: every queue; amqp: the channel's queue).",
)
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@json_option
def queue_clear(
    driver: str | None, channel: str | None, queue: str | None, force: bool, as_json: bool
) -> None:
    """Delete pending jobs that no worker holds."""
    target = _driver(driver)
    clear = getattr(target, "clear", None)
    if clear is None:
        raise CraftError(f"the {target.name} driver keeps no jobs to clear")
    question = getattr(target, "clear_question")(queue=queue, channel=channel)  # noqa: B009
    if not force and not click.confirm(question):
        raise CraftError("nothing deleted")
    count = _run(lambda: clear(queue=queue, channel=channel))
    _report(as_json, {"deleted": count}, f"deleted {count} pending job(s)")


@click.command("queue:status")
@click.option("--driver", "-d", default=None, help="Driver (default: DRIVER).")
@click.option("--channel", "-c", default=None, help="amqp: the queue; database: the connection.")
@json_option
def queue_status(driver: str | None, channel: str | None, as_json: bool) -> None:
    """Show pending, delayed, reserved and failed jobs per queue."""
    target = _driver(driver)
    counts = getattr(target, "counts", None)
    if counts is None:
        raise CraftError(f"the {target.name} driver keeps no queue to count")
    queues = _run(lambda: counts(channel))
    store = make(FailedJobStore)
    failed: dict[str, int] = {}
    if isinstance(store, DatabaseFailedJobStore) and _run(store.available):
        for failure in _run(lambda: store.all(driver=target.name)):
            failed[failure.queue] = failed.get(failure.queue, 0) + 1
    rows = []
    names = sorted({entry.queue for entry in queues} | set(failed))
    by_name = {entry.queue: entry for entry in queues}
    for name in names:
        entry = by_name.get(name)
        rows.append(
            {
                "driver": target.name,
                "connection": entry.connection
                if entry
                else (channel or getattr(target, "connection", "")),
                "queue": name,
                "pending": entry.pending if entry else 0,
                "delayed": entry.delayed if entry else 0,
                "reserved": entry.reserved if entry else 0,
                "failed": failed.get(name, 0),
                "oldest_pending_seconds": round(entry.oldest_pending_age, 1)
                if entry and entry.oldest_pending_age is not None
                else None,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no jobs on {target.name}")
        return
    headers = ["connection", "queue", "pending", "delayed", "reserved", "failed", "oldest pending"]
    _echo_table(
        headers,
        [
            [
                row["connection"],
                row["queue"],
                row["pending"],
                row["delayed"],
                row["reserved"],
                row["failed"],
                "-"
                if row["oldest_pending_seconds"] is None
                else f"{row['oldest_pending_seconds']}s",
            ]
            for row in rows
        ],
    )
