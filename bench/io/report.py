"""The I/O-bound table and the issue 12 targets, for the terminal and as Markdown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bench.io.base import IoRow, Round
from bench.measure import Summary
from bench.report import format_summary

HEADINGS = ("row", "broker", "jobs/s", "peak in flight", "x floor", "x best peer")
FLOOR_SHARE = 0.7  # ours against the floor, on amqp and on PostgreSQL
PEER_MULTIPLE = 1.5  # ours against the best peer


@dataclass
class RowResult:
    """A row and its rounds, or why it did not run."""

    row: IoRow
    problem: str | None = None
    rounds: list[Round] = field(default_factory=list)
    cleanup_errors: list[str] = field(default_factory=list)

    def rate(self) -> Summary | None:
        """Median and spread of jobs/s over the rounds that measured it."""
        values = [result.rate for result in self.rounds if result.rate is not None]
        return Summary.of(values) if values else None

    def peak(self) -> int | None:
        """The lowest peak in flight over the rounds (each round should reach 100)."""
        values = [result.peak for result in self.rounds if result.peak is not None]
        return min(values) if values else None

    def notes(self) -> list[str]:
        """Distinct problems and errors of the rounds, and clean-up failures."""
        found: list[str] = []
        for result in self.rounds:
            for text in (result.problem, result.error):
                if text and text not in found:
                    found.append(text)
        return found + [text for text in self.cleanup_errors if text not in found]


@dataclass(frozen=True)
class Verdict:
    """One target: what it asks, met (None: not measured) and the figures."""

    target: str
    met: bool | None
    figures: str


def best_peer(results: Sequence[RowResult]) -> tuple[RowResult, float] | None:
    """The peer with the highest median jobs/s, and that median."""
    measured = [
        (result, summary.median)
        for result in results
        if result.row.kind == "peer" and (summary := result.rate()) is not None
    ]
    return max(measured, key=lambda item: item[1]) if measured else None


def table(results: Sequence[RowResult]) -> tuple[list[list[str]], list[str]]:
    """The cells of each row, and the footnotes they point to."""
    by_name = {result.row.name: result for result in results}
    floor = by_name.get("floor")
    floor_rate = floor.rate() if floor else None
    peer = best_peer(results)
    rows, notes = [], []

    def note(text: str) -> str:
        if text not in notes:
            notes.append(text)
        return f"[{notes.index(text) + 1}]"

    for result in results:
        name = result.row.name
        if result.problem:
            rows.append(
                [
                    name,
                    result.row.broker,
                    f"not measured {note(f'{name}: {result.problem}')}",
                    "",
                    "",
                    "",
                ]
            )
            continue
        summary = result.rate()
        marks = "".join(note(f"{name}: {text}") for text in result.notes())
        if summary is None:
            rows.append([name, result.row.broker, f"not measured {marks}", "", "", ""])
            continue
        cells = [
            name,
            result.row.broker,
            format_summary(summary, 0) + (f" {marks}" if marks else ""),
        ]
        cells.append(str(result.peak()) if result.peak() is not None else "-")
        cells.append(
            f"{summary.median / floor_rate.median:.2f}"
            if floor_rate and result is not floor
            else "-"
        )
        if result.row.kind == "ours" and peer is not None:
            cells.append(f"{summary.median / peer[1]:.2f} ({peer[0].row.name})")
        else:
            cells.append("-")
        rows.append(cells)
    return rows, notes


def judge(results: Sequence[RowResult]) -> list[Verdict]:
    """The targets of issue 12, judged on this run's medians."""
    by_name = {result.row.name: result for result in results}

    def median(name: str) -> float | None:
        result = by_name.get(name)
        summary = result.rate() if result and not result.problem else None
        return summary.median if summary else None

    floor, peer = median("floor"), best_peer(results)
    verdicts = []
    for name, label in (("ours-amqp", "amqp"), ("ours-postgresql", "PostgreSQL")):
        ours = median(name)
        target = f"ours on {label} >= {FLOOR_SHARE}x the floor"
        if ours is None or not floor:
            verdicts.append(Verdict(target, None, ""))
        else:
            figures = f"{ours:,.0f} vs {floor:,.0f} jobs/s: {ours / floor:.2f}x"
            verdicts.append(Verdict(target, ours / floor >= FLOOR_SHARE, figures))
    for name, label in (("ours-amqp", "amqp"), ("ours-postgresql", "PostgreSQL")):
        ours = median(name)
        target = f"ours on {label} >= {PEER_MULTIPLE}x the best peer"
        if ours is None or peer is None:
            verdicts.append(Verdict(target, None, ""))
        else:
            best, rate = peer
            figures = f"{ours:,.0f} vs {best.row.name} {rate:,.0f} jobs/s: {ours / rate:.2f}x"
            verdicts.append(Verdict(target, ours / rate >= PEER_MULTIPLE, figures))
    return verdicts


WORDS: Mapping[bool | None, str] = {True: "met", False: "not met", None: "not measured"}


def terminal(
    rows: Sequence[Sequence[str]], notes: Sequence[str], verdicts: Sequence[Verdict]
) -> str:
    """The table, its footnotes and the verdicts as plain text."""
    grid = [list(HEADINGS), *map(list, rows)]
    widths = [max(len(row[index]) for row in grid) for index in range(len(HEADINGS))]
    lines = []
    for number, row in enumerate(grid):
        lines.append(
            "  ".join(
                cell.ljust(width) if index < 2 else cell.rjust(width)
                for index, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    if notes:
        lines += ["", *(f"[{number}] {text}" for number, text in enumerate(notes, start=1))]
    width = max(len(verdict.target) for verdict in verdicts)
    lines.append("")
    lines += [
        f"{verdict.target.ljust(width)}  {WORDS[verdict.met]:<12}  {verdict.figures}".rstrip()
        for verdict in verdicts
    ]
    return "\n".join(lines)


def markdown_table(rows: Sequence[Sequence[str]], notes: Sequence[str]) -> str:
    """The table as Markdown, footnotes below."""
    lines = [
        "| " + " | ".join(HEADINGS) + " |",
        "| --- | --- | " + " | ".join(["---:"] * (len(HEADINGS) - 2)) + " |",
    ]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    if notes:
        lines += ["", *(f"[{number}] {text}  " for number, text in enumerate(notes, start=1))]
    return "\n".join(lines)


def markdown_verdicts(verdicts: Sequence[Verdict]) -> str:
    """The verdicts as a Markdown table."""
    lines = ["| target | verdict | figures |", "| --- | --- | --- |"]
    lines += [
        f"| {verdict.target} | {WORDS[verdict.met]} | {verdict.figures or '-'} |"
        for verdict in verdicts
    ]
    return "\n".join(lines)
