"""The results table, for the terminal and as a Markdown file.

Cells are medians over the rounds with the spread (min-max) behind them;
"-" means the cell does not apply, "error [n]" that it could not be
measured (footnote n says why), a trailing "!" that it was measured but the
check of the jobs found a problem (footnote too). Our rows carry ratios:
to their raw floor, and to the best peer on the same broker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bench.measure import Summary
from bench.runner import RowReport

# Column key, heading, decimals.
VALUE_COLUMNS = (
    ("push", "push/s", 0),
    ("push_bulk", "bulk push/s", 0),
    ("drain_c1", "drain/s c=1", 0),
    ("drain_default", "drain/s default", 0),
    ("p50", "p50 ms", 1),
    ("p99", "p99 ms", 1),
    ("rss", "idle RSS MiB", 1),
)
HEADINGS = (
    "row",
    *(heading for _, heading, _ in VALUE_COLUMNS[:4]),
    "default c",
    *(heading for _, heading, _ in VALUE_COLUMNS[4:]),
    "push x floor",
    "c=1 x floor",
    "push x peer",
    "c=1 x peer",
)


@dataclass
class Table:
    """The rendered cells and the footnotes they point to."""

    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> int:
        """Add a footnote (once) and return its number."""
        if text not in self.notes:
            self.notes.append(text)
        return self.notes.index(text) + 1


def build(reports: Sequence[RowReport]) -> Table:
    """Turn the row reports into cells and footnotes."""
    table = Table()
    by_name = {report.row.name: report for report in reports}
    for report in reports:
        if report.problem:
            number = table.note(f"{report.row.name}: {report.problem}")
            blank = ["" for _ in HEADINGS[1:]]
            blank[0] = f"n/a [{number}]"
            table.rows.append([report.row.name, *blank])
            continue
        cells = [report.row.name]
        for index, (column, _, decimals) in enumerate(VALUE_COLUMNS):
            if index == 4:
                cells.append(report.concurrency())
            cells.append(_cell(table, report, column, decimals))
        cells += _ratios(report, by_name)
        for message in report.cleanup_errors:
            table.note(f"{report.row.name}: {message}")
        table.rows.append(cells)
    return table


def _cell(table: Table, report: RowReport, column: str, decimals: int) -> str:
    summary = report.summary(column)
    errors = report.errors(column)
    if summary is None:
        if errors:
            numbers = [table.note(f"{report.row.name}: {error}") for error in errors]
            return "error " + "".join(f"[{number}]" for number in numbers)
        return "-"
    text = format_summary(summary, decimals)
    for problem in report.flags(column):
        text += f" ![{table.note(f'{report.row.name} {column}: {problem}')}]"
    for error in errors:  # measured in some rounds only
        text += f" [{table.note(f'{report.row.name} (some rounds): {error}')}]"
    return text


def format_summary(summary: Summary, decimals: int) -> str:
    """ "1,523 (1,490-1,560)", or just the median after a single round."""
    median = _number(summary.median, decimals)
    if summary.rounds == 1:
        return median
    return f"{median} ({_number(summary.low, decimals)}-{_number(summary.high, decimals)})"


def _number(value: float, decimals: int) -> str:
    if value == float("inf"):
        return "inf"
    if decimals == 0 or value >= 100:
        return f"{value:,.0f}"
    return f"{value:,.{decimals}f}"


def _ratios(report: RowReport, by_name: Mapping[str, RowReport]) -> list[str]:
    if report.row.kind != "ours":
        return ["", "", "", ""]
    floor = by_name.get(report.row.floor or "")
    peers = [
        other
        for other in by_name.values()
        if other.row.kind == "peer" and other.row.broker == report.row.broker
    ]
    return [
        _ratio(report, floor, "push"),
        _ratio(report, floor, "drain_c1"),
        _best_peer_ratio(report, peers, "push"),
        _best_peer_ratio(report, peers, "drain_c1"),
    ]


def _ratio(report: RowReport, other: RowReport | None, column: str) -> str:
    ours, theirs = report.summary(column), other.summary(column) if other else None
    if ours is None or theirs is None or theirs.median == 0:
        return "-"
    return f"{ours.median / theirs.median:.2f}"


def _best_peer_ratio(report: RowReport, peers: Sequence[RowReport], column: str) -> str:
    measured = [(peer, peer.summary(column)) for peer in peers]
    measured = [(peer, summary) for peer, summary in measured if summary is not None]
    ours = report.summary(column)
    if ours is None or not measured:
        return "-"
    best, summary = max(measured, key=lambda item: item[1].median)
    return f"{ours.median / summary.median:.2f} ({best.row.name})"


# Rendering --------------------------------------------------------------------------


def terminal(table: Table) -> str:
    """The table as aligned plain text, footnotes below."""
    grid = [list(HEADINGS), *table.rows]
    widths = [max(len(row[index]) for row in grid) for index in range(len(HEADINGS))]
    lines = []
    for number, row in enumerate(grid):
        lines.append(
            "  ".join(
                cell.ljust(width) if index == 0 else cell.rjust(width)
                for index, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    lines += _footnotes(table)
    return "\n".join(lines)


def markdown(table: Table) -> str:
    """The table as Markdown, footnotes below."""
    lines = [
        "| " + " | ".join(HEADINGS) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(HEADINGS) - 1)) + " |",
    ]
    lines += [
        "| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in table.rows
    ]
    footnotes = _footnotes(table)
    if footnotes:
        lines += ["", *(f"{line}  " for line in footnotes[1:])]
    return "\n".join(lines)


def _footnotes(table: Table) -> list[str]:
    if not table.notes:
        return []
    return ["", *(f"[{number}] {text}" for number, text in enumerate(table.notes, start=1))]


def document(
    table: Table,
    reports: Sequence[RowReport],
    *,
    title: str,
    facts: Mapping[str, str],
    packages: Mapping[str, str],
    servers: Mapping[str, str],
    verdicts: str,
) -> str:
    """The whole Markdown file: facts, the table, targets, what each row measures, start-ups."""
    lines = [f"# {title}", ""]
    lines += [f"- {label}: {value}" for label, value in facts.items()]
    lines.append(
        "- Packages: " + ", ".join(f"{name} {version}" for name, version in packages.items())
    )
    lines.append(
        "- Servers: " + ", ".join(f"{name} {version}" for name, version in servers.items())
    )
    lines += ["", markdown(table), "", "## Targets (issue 6)", "", verdicts]
    lines += ["", "## What each row measures", ""]
    for report in reports:
        lines.append(f"- `{report.row.name}` ({report.row.broker}): {report.row.summary}")
    lines += ["", "## Columns", "", *(f"- {text}" for text in COLUMN_NOTES)]
    startups = [(report, report.startup()) for report in reports]
    startups = [(report, summary) for report, summary in startups if summary is not None]
    if startups:
        lines += [
            "",
            "## Worker start-up",
            "",
            "Seconds from starting the worker process to its first job (not part of drain/s).",
            "",
            "| row | seconds |",
            "| --- | ---: |",
        ]
        lines += [
            f"| {report.row.name} | {format_summary(summary, 2)} |" for report, summary in startups
        ]
    return "\n".join(lines) + "\n"


COLUMN_NOTES = (
    "push/s: single pushes, one job per call, from one client process, after one warm-up push.",
    "bulk push/s: the same jobs pushed 100 per `push(*jobs)` call (job instances carrying "
    "their number), for our amqp and database rows; every job is then checked to be queued.",
    "drain/s c=1: one worker process with one consumer, started on a queue holding all the "
    "jobs; jobs per second between the first and the last job's start (worker start-up "
    "excluded). Every job records its start; the run checks each ran exactly once.",
    "drain/s default: the same at the system's default concurrency ('default c').",
    "p50/p99 ms: from just before the push call to the job's start, pushing at a steady rate "
    "to an idle c=1 worker.",
    "idle RSS MiB: resident memory of the c=1 worker's process tree, started, one warm-up job "
    "run, then idle for a second.",
    "x floor: our median over the raw floor's; x peer: over the best peer on the same broker.",
)
