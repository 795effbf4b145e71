"""`python -m bench`: measure our drivers, the raw floors and the peers on this machine.

Run it from the project root with the bench extra installed
(`pip install -e '.[bench]'`) and the local servers up. It prints the table
and writes it, with the machine, versions and command, to
`bench/results/<date>-<machine>.md`. Progress goes to stderr.
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
from pathlib import Path

from bench import machine, report, servers, targets
from bench.child import ROOT
from bench.rows import all_rows
from bench.rows.base import Run
from bench.runner import run_rows


def parse(arguments: list[str]) -> argparse.Namespace:
    """Read the command line."""
    names = [row.name for row in all_rows()]
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark our queue drivers against the raw floors and the peers.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="rows: " + ", ".join(names),
    )
    parser.add_argument("--jobs", type=_positive, default=5000, help="jobs per row and round")
    parser.add_argument("--rounds", type=_positive, default=3, help="rounds (medians over them)")
    parser.add_argument("--only", default="", help="comma-separated row names to run")
    parser.add_argument("--skip-peers", action="store_true", help="leave out the peers")
    parser.add_argument(
        "--latency-jobs",
        type=_positive,
        default=1000,
        help="jobs pushed at the steady rate for latency (at most --jobs)",
    )
    parser.add_argument("--rate", type=float, default=200.0, help="steady push rate, jobs/s")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "bench" / "results", help="where the .md goes"
    )
    options = parser.parse_args(arguments)
    options.only = [name.strip() for name in options.only.split(",") if name.strip()]
    unknown = sorted(set(options.only) - set(names))
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)}; rows: {', '.join(names)}")
    if options.jobs < 2:
        parser.error("--jobs must be at least 2 (a drain rate needs two job starts)")
    if options.rate <= 0:
        parser.error("--rate must be positive")
    return options


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def say(line: str) -> None:
    """Progress, on stderr."""
    print(line, file=sys.stderr, flush=True)


def main(arguments: list[str] | None = None) -> int:
    """Run the benchmark; return the exit code."""
    arguments = sys.argv[1:] if arguments is None else arguments
    options = parse(arguments)
    rows = [
        row
        for row in all_rows()
        if (not options.only or row.name in options.only)
        and not (options.skip_peers and row.kind == "peer")
    ]
    if not rows:
        say("no rows left to run")
        return 2
    command = "python -m bench" + (" " + shlex.join(arguments) if arguments else "")
    started = dt.datetime.now().astimezone()
    load_before = machine.load()
    workdir = Path(tempfile.mkdtemp(prefix="queue-bench-"))
    run = Run(
        jobs=options.jobs,
        latency_jobs=min(options.latency_jobs, options.jobs),
        rate=options.rate,
        workdir=workdir,
        key="base64:" + base64.b64encode(os.urandom(32)).decode(),
    )
    say(f"{command}: {len(rows)} row(s), {options.jobs} jobs, {options.rounds} round(s)")
    try:
        reports = run_rows(rows, run, options.rounds, say)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    table = report.build(reports)
    verdicts = targets.judge(reports)
    print(report.terminal(table))
    print()
    print(targets.terminal(verdicts))
    facts = {
        "Date": started.isoformat(timespec="seconds"),
        "Command": f"`{command}`",
        "Machine": machine.describe(),
        "Load average (1/5/15 min)": f"{load_before} at the start, {machine.load()} at the end",
        "Python": machine.python(),
        "Jobs": (
            f"{run.jobs} per row and round, {options.rounds} round(s); latency: "
            f"{run.latency_jobs} jobs at {run.rate:g}/s; cells are medians (min-max)"
        ),
    }
    text = report.document(
        table,
        reports,
        title=f"Benchmark, {started:%Y-%m-%d} on {machine.name()}",
        facts=facts,
        packages=machine.package_versions(),
        servers=servers.versions(),
        verdicts=targets.markdown(verdicts),
    )
    options.output.mkdir(parents=True, exist_ok=True)
    path = options.output / f"{started:%Y-%m-%d}-{machine.name()}.md"
    path.write_text(text)
    say(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
