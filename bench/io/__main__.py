"""`python -m bench.io`: N jobs that each await 50 ms, 100 in flight in one worker process.

Run from the project root with the bench extra installed and the local
servers up (RabbitMQ, PostgreSQL, Redis on 127.0.0.1). For each round, each
row is measured in turn: the floor (`asyncio.gather` under a semaphore of
100), our `craft queue:work --async-concurrency 100` on amqp and on
PostgreSQL, procrastinate, Dramatiq and arq, each draining a queue filled
beforehand. A row's rate is N over the span from its first job's start to
its last job's end, its cell the median over the rounds. The table goes to
stdout and, with the machine and versions, to
`bench/results/<date>-<machine>-io.md` (`-io-prefetch<n>.md` with a
`--prefetch` other than the default); progress to stderr.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import os
import shlex
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from bench import machine, servers
from bench.child import ROOT
from bench.io import report
from bench.io.base import DEFAULT_PREFETCH, IoRun, Round
from bench.io.postgres import postgres_dsn
from bench.io.rows import all_rows
from bench.io.work import IN_FLIGHT, SLEEP
from bench.rows.base import brief

PACKAGES = ("queueing-toolkit", "pika", "psycopg", "procrastinate", "dramatiq", "arq", "redis")
DATABASE_VARIABLE = "BENCH_IO_DATABASE"


def parse(arguments: list[str]) -> argparse.Namespace:
    """Read the command line."""
    names = [row.name for row in all_rows()]
    parser = argparse.ArgumentParser(
        prog="python -m bench.io",
        description=(
            f"I/O-bound benchmark: N jobs that each await asyncio.sleep({SLEEP}), "
            f"{IN_FLIGHT} in flight in one worker process."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="rows: " + ", ".join(names),
    )
    parser.add_argument("--jobs", type=_positive, default=2000, help="jobs per row and round")
    parser.add_argument("--rounds", type=_positive, default=3, help="rounds (medians over them)")
    parser.add_argument("--only", default="", help="comma-separated row names to run")
    parser.add_argument(
        "--database",
        default=os.environ.get(DATABASE_VARIABLE, "test"),
        help=f"PostgreSQL database for the PostgreSQL rows (or ${DATABASE_VARIABLE}); "
        "each row works in its own schema and drops it",
    )
    parser.add_argument(
        "--prefetch",
        type=_positive,
        default=DEFAULT_PREFETCH,
        help="prefetch of our amqp and database workers and of Dramatiq's consumer "
        f"(at least {IN_FLIGHT})",
    )
    parser.add_argument(
        "--output", type=Path, default=ROOT / "bench" / "results", help="where the .md goes"
    )
    options = parser.parse_args(arguments)
    options.only = [name.strip() for name in options.only.split(",") if name.strip()]
    unknown = sorted(set(options.only) - set(names))
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)}; rows: {', '.join(names)}")
    if options.jobs < IN_FLIGHT:
        parser.error(f"--jobs must be at least {IN_FLIGHT}, to have {IN_FLIGHT} in flight")
    if options.prefetch < IN_FLIGHT:
        parser.error(f"--prefetch must be at least {IN_FLIGHT}, to feed {IN_FLIGHT} in flight")
    return options


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def say(line: str) -> None:
    """Progress, on stderr."""
    print(line, file=sys.stderr, flush=True)


def run_rows(results: list[report.RowResult], run: IoRun, rounds: int) -> None:
    """Measure every available row once per round, rounds interleaved."""
    for result in results:
        try:
            result.problem = result.row.unavailable(run)
        except Exception as error:
            result.problem = f"not available: {brief(error)}"
        if result.problem:
            say(f"{result.row.name}: not measured: {result.problem}")
    for number in range(1, rounds + 1):
        for result in results:
            if result.problem:
                continue
            say(f"round {number}/{rounds}: {result.row.name} ...")
            started = time.monotonic()
            result.rounds.append(one_round(result, run))
            measured = result.rounds[-1]
            shown = f"{measured.rate:,.0f} jobs/s, peak {measured.peak}" if measured.rate else ""
            trouble = "; ".join(filter(None, [measured.problem, measured.error]))
            say(
                f"  {shown} {f'[{trouble}]' if trouble else ''} ({time.monotonic() - started:.0f}s)"
            )


def one_round(result: report.RowResult, run: IoRun) -> Round:
    """Set up, measure and clean up one row once; an error is noted, never raised."""
    row = result.row
    try:
        row.setup(run)
        return row.measure(run)
    except Exception as error:
        return Round(error=brief(error))
    finally:
        try:
            row.cleanup(run)
        except Exception as error:
            message = f"clean-up failed: {brief(error)}"
            if message not in result.cleanup_errors:
                result.cleanup_errors.append(message)


def main(arguments: list[str] | None = None) -> int:
    """Run the benchmark; return the exit code."""
    arguments = sys.argv[1:] if arguments is None else arguments
    options = parse(arguments)
    rows = [row for row in all_rows() if not options.only or row.name in options.only]
    command = "python -m bench.io" + (" " + shlex.join(arguments) if arguments else "")
    started = dt.datetime.now().astimezone()
    load_before = machine.load()
    workdir = Path(tempfile.mkdtemp(prefix="queue-bench-io-"))
    run = IoRun(
        jobs=options.jobs,
        latency_jobs=0,
        rate=1.0,
        workdir=workdir,
        key="base64:" + base64.b64encode(os.urandom(32)).decode(),
        database=options.database,
        prefetch=options.prefetch,
    )
    say(f"{command}: {len(rows)} row(s), {options.jobs} jobs, {options.rounds} round(s)")
    results = [report.RowResult(row) for row in rows]
    try:
        run_rows(results, run, options.rounds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    cells, notes = report.table(results)
    verdicts = report.judge(results)
    print(report.terminal(cells, notes, verdicts))
    facts = {
        "Date": started.isoformat(timespec="seconds"),
        "Command": f"`{command}`",
        "Machine": machine.describe(),
        "Load average (1/5/15 min)": f"{load_before} at the start, {machine.load()} at the end",
        "Python": machine.python(),
        "Workload": (
            f"{run.jobs} jobs per row and round, each `await asyncio.sleep({SLEEP})`, "
            f"{IN_FLIGHT} in flight in one worker process, {options.rounds} round(s); "
            "cells are medians (min-max)"
        ),
        "Prefetch": f"{run.prefetch} (our amqp and database workers, Dramatiq's consumer)",
        "PostgreSQL database": f"`{run.database}` (each row in its own schema, dropped after)",
        "Packages": ", ".join(f"{name} {version}" for name, version in package_versions().items()),
        "Servers": ", ".join(f"{name} {version}" for name, version in server_versions(run).items()),
    }
    suffix = "" if run.prefetch == DEFAULT_PREFETCH else f"-prefetch{run.prefetch}"
    path = options.output / f"{started:%Y-%m-%d}-{machine.name()}-io{suffix}.md"
    options.output.mkdir(parents=True, exist_ok=True)
    path.write_text(document(results, cells, notes, verdicts, started, facts))
    say(f"written: {path}")
    return 0


def document(
    results: list[report.RowResult],
    cells: list[list[str]],
    notes: list[str],
    verdicts: list[report.Verdict],
    started: dt.datetime,
    facts: dict[str, str],
) -> str:
    """The results file: facts, the table, the targets, what each row runs."""
    lines = [f"# I/O-bound benchmark, {started:%Y-%m-%d} on {machine.name()}", ""]
    lines += [f"- {label}: {value}" for label, value in facts.items()]
    lines += ["", report.markdown_table(cells, notes), "", "## Targets (issue 12)", ""]
    lines += [report.markdown_verdicts(verdicts), "", "## What each row runs", ""]
    lines += [
        f"- `{result.row.name}` ({result.row.broker}): {result.row.summary}" for result in results
    ]
    lines += ["", "## Columns", "", *(f"- {text}" for text in COLUMN_NOTES)]
    return "\n".join(lines) + "\n"


COLUMN_NOTES = (
    "jobs/s: N over the span from the first job's start to the last job's end (the worker's "
    "start-up and the pushing, done beforehand, are outside it). Every job records its start "
    "and its end; a round checks that each of the N did both exactly once and that nothing is "
    "left queued.",
    f"peak in flight: the most jobs between start and end at one time (lowest over the "
    f"rounds); {IN_FLIGHT} means the row really ran {IN_FLIGHT} at once.",
    f"x floor: the row's median over the floor's (the floor's ideal is {IN_FLIGHT} / {SLEEP} s "
    f"= {IN_FLIGHT / SLEEP:,.0f} jobs/s); x best peer: ours over the fastest peer's median.",
)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages measured."""
    found = {}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def server_versions(run: IoRun) -> dict[str, str]:
    """The version of each server the rows use (or why it is unknown)."""
    readers = {
        "RabbitMQ": _rabbitmq_version,
        "PostgreSQL": _postgres_version,
        "Redis": _redis_version,
    }
    found = {}
    for name, reader in readers.items():
        try:
            found[name] = reader(run)
        except Exception as error:
            found[name] = f"unknown ({type(error).__name__})"
    return found


def _rabbitmq_version(run: IoRun) -> str:
    with servers.amqp_channel() as channel:
        version = channel.connection._impl.server_properties.get("version", b"?")
    return version.decode() if isinstance(version, bytes) else str(version)


def _postgres_version(run: IoRun) -> str:
    import psycopg

    with psycopg.connect(postgres_dsn(run.database), connect_timeout=5) as connection:
        row = connection.execute("SHOW server_version").fetchone()
    return str(row[0]).split()[0] if row else "?"


def _redis_version(run: IoRun) -> str:
    from redis import Redis

    with Redis.from_url(servers.REDIS_URL, socket_timeout=5) as connection:
        return str(connection.info("server")["redis_version"])


if __name__ == "__main__":
    sys.exit(main())
