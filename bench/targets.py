"""The speed targets of issue 6, judged from the medians of one run.

Each target compares figures measured in the same run, so the machine
cancels out. A target whose figures are missing (a row not run or failed)
is "not measured".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bench.runner import RowReport

Medians = Callable[[str, str], float | None]


@dataclass(frozen=True)
class Verdict:
    """One target: what it asks, whether it is met, and the figures behind it."""

    target: str
    met: bool | None  # None: not measured
    figures: str


def judge(reports: Sequence[RowReport]) -> list[Verdict]:
    """Judge every target against this run's medians."""
    by_name = {report.row.name: report for report in reports}

    def median(row: str, column: str) -> float | None:
        report = by_name.get(row)
        summary = report.summary(column) if report else None
        return summary.median if summary else None

    return [check(median) for check in CHECKS]


def _ratio(
    target: str, median: Medians, ours: tuple[str, str], theirs: tuple[str, str], at_least: float
) -> Verdict:
    mine, other = median(*ours), median(*theirs)
    if mine is None or other is None or other == 0:
        return Verdict(target, None, "")
    ratio = mine / other
    figures = f"{mine:,.0f} vs {other:,.0f}/s: {ratio:.2f}x"
    return Verdict(target, ratio >= at_least, figures)


def _best_peer(target: str, median: Medians, ours: str, peers: Sequence[str]) -> Verdict:
    mine = median(ours, "drain_c1")
    measured = {peer: median(peer, "drain_c1") for peer in peers}
    measured = {peer: value for peer, value in measured.items() if value is not None}
    if mine is None or not measured:
        return Verdict(target, None, "")
    best = max(measured, key=lambda peer: measured[peer])
    ratio = mine / measured[best]
    return Verdict(target, ratio >= 1.0, f"{mine:,.0f} vs {best} {measured[best]:,.0f}/s")


def _latency(target: str, median: Medians, row: str) -> Verdict:
    p99 = median(row, "p99")
    if p99 is None:
        return Verdict(target, None, "")
    return Verdict(target, p99 < 50.0, f"p99 {p99:.1f} ms")


def _async_push(median: Medians) -> Verdict:
    target = "async push <= 2x (ThreadPoolExecutor.submit + serialize and sign)"
    ours, floor = median("async", "push"), median("raw-threadpool", "push")
    seal = median("async", "seal")
    if not ours or not floor or seal is None:
        return Verdict(target, None, "")
    ours_us, budget_us = 1e6 / ours, 2 * (1e6 / floor + seal * 1e6)
    return Verdict(
        target, ours_us <= budget_us, f"{ours_us:.1f} us per push, budget {budget_us:.1f} us"
    )


CHECKS: tuple[Callable[[Medians], Verdict], ...] = (
    lambda m: _ratio(
        "amqp drain c=1 >= 1.2x Dramatiq c=1",
        m,
        ("amqp", "drain_c1"),
        ("dramatiq", "drain_c1"),
        1.2,
    ),
    lambda m: _ratio(
        "amqp drain c=1 >= 2x Celery solo", m, ("amqp", "drain_c1"), ("celery", "drain_c1"), 2.0
    ),
    lambda m: _ratio(
        "amqp push >= 0.8x raw confirmed publish", m, ("amqp", "push"), ("raw-pika", "push"), 0.8
    ),
    lambda m: _ratio(
        "amqp bulk push(*jobs) > 1.0x raw confirmed publish",
        m,
        ("amqp", "push_bulk"),
        ("raw-pika", "push"),
        1.0,
    ),
    lambda m: _best_peer(
        "database-postgresql drain c=1 >= best PostgreSQL peer",
        m,
        "database-postgresql",
        ("procrastinate", "pgqueuer"),
    ),
    lambda m: _ratio(
        "database-postgresql drain c=1 >= 1.0x raw SKIP LOCKED loop",
        m,
        ("database-postgresql", "drain_c1"),
        ("raw-postgresql", "drain_c1"),
        1.0,
    ),
    lambda m: _best_peer(
        "database-sqlite drain c=1 >= Huey on SQLite", m, "database-sqlite", ("huey",)
    ),
    _async_push,
    lambda m: _latency("amqp p99 at the steady rate < 50 ms", m, "amqp"),
    lambda m: _latency(
        "database-postgresql p99 at the steady rate < 50 ms", m, "database-postgresql"
    ),
)


def markdown(verdicts: Sequence[Verdict]) -> str:
    """The verdicts as a Markdown table."""
    words: Mapping[bool | None, str] = {True: "met", False: "not met", None: "not measured"}
    lines = ["| target | verdict | figures |", "| --- | --- | --- |"]
    lines += [
        f"| {verdict.target} | {words[verdict.met]} | {verdict.figures or '-'} |"
        for verdict in verdicts
    ]
    return "\n".join(lines)


def terminal(verdicts: Sequence[Verdict]) -> str:
    """The verdicts as plain lines."""
    words: Mapping[bool | None, str] = {True: "met", False: "NOT MET", None: "not measured"}
    width = max(len(verdict.target) for verdict in verdicts)
    return "\n".join(
        f"{verdict.target.ljust(width)}  {words[verdict.met]:<12}  {verdict.figures}".rstrip()
        for verdict in verdicts
    )
