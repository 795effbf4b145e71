"""The rounds: every row once per round, rounds interleaved, failures noted and passed over."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.measure import Summary
from bench.rows.base import COLUMNS, RoundResult, Row, Run, brief


@dataclass
class RowReport:
    """Everything measured for one row over the run."""

    row: Row
    problem: str | None = None  # why the row did not run at all
    rounds: list[RoundResult] = field(default_factory=list)
    cleanup_errors: list[str] = field(default_factory=list)

    def summary(self, column: str) -> Summary | None:
        """Median and spread of `column` over the rounds that measured it."""
        values = [result.values[column] for result in self.rounds if column in result.values]
        return Summary.of(values) if values else None

    def not_applicable(self, column: str) -> bool:
        """Say whether `column` does not apply to this row."""
        return any(column in result.not_applicable for result in self.rounds)

    def errors(self, column: str) -> list[str]:
        """The distinct errors that kept `column` from being measured, in order."""
        found: list[str] = []
        for result in self.rounds:
            message = result.errors.get(column)
            if message and message not in found:
                found.append(message)
        return found

    def flags(self, column: str) -> list[str]:
        """The distinct problems found with measured values of `column`."""
        found: list[str] = []
        for result in self.rounds:
            message = result.flags.get(column)
            if message and message not in found:
                found.append(message)
        return found

    def concurrency(self) -> str:
        """The default concurrency as measured (a configured pool) or as declared."""
        for result in self.rounds:
            if result.concurrency:
                return result.concurrency
        return self.row.default_concurrency

    def startup(self) -> Summary | None:
        """Seconds from a worker's start to its first job, over every drain."""
        values = [seconds for result in self.rounds for seconds in result.startup.values()]
        return Summary.of(values) if values else None


def run_rows(
    rows: Sequence[Row], run: Run, rounds: int, say: Callable[[str], None]
) -> list[RowReport]:
    """Measure `rows` for `rounds` rounds and return what was found for each."""
    reports = [RowReport(row) for row in rows]
    for report in reports:
        try:
            report.problem = report.row.unavailable(run)
        except Exception as error:
            report.problem = f"not available: {brief(error)}"
        if report.problem:
            say(f"{report.row.name}: {report.problem}")
    for number in range(1, rounds + 1):
        for report in reports:
            if report.problem:
                continue
            say(f"round {number}/{rounds}: {report.row.name} ...")
            started = time.monotonic()
            report.rounds.append(_one_round(report, run))
            say(f"  {_progress(report.rounds[-1])} ({time.monotonic() - started:.0f}s)")
    return reports


def _one_round(report: RowReport, run: Run) -> RoundResult:
    row = report.row
    try:
        row.setup(run)
        return row.measure(run)
    except Exception as error:
        return RoundResult(errors={column: brief(error) for column in COLUMNS})
    finally:
        try:
            row.cleanup(run)
        except Exception as error:
            message = f"clean-up failed: {brief(error)}"
            if message not in report.cleanup_errors:
                report.cleanup_errors.append(message)


def _progress(result: RoundResult) -> str:
    shown = []
    for column in COLUMNS:
        if column in result.values:
            mark = "!" if column in result.flags else ""
            shown.append(f"{column}={result.values[column]:.1f}{mark}")
        elif column in result.errors:
            shown.append(f"{column}=error")
    failures = sorted(set(result.errors.values()))
    return " ".join(shown) + (f"  [{'; '.join(failures)}]" if failures else "")
