"""Timing, counting, latency and memory helpers shared by every row.

The jobs of every system append `"<seq> <start time>"` to a record file (see
`bench.probe`); everything measured on the working side is read back from
that file, so the same clock and the same rules apply to ours, the raw
floors and the peers.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.child import last_line

POLL = 0.02  # seconds between looks at the record file


class MeasurementError(RuntimeError):
    """A measurement could not be completed (timed out, worker died, jobs missing)."""


# Summaries --------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """The median of one cell over the rounds, and its spread."""

    median: float
    low: float
    high: float
    rounds: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        """Summarize the values measured in each round."""
        return cls(statistics.median(values), min(values), max(values), len(values))


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the `fraction` quantile of `values` (nearest rank)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


# Record files -----------------------------------------------------------------------


@dataclass
class Records:
    """What the jobs wrote: the start times of each sequence number."""

    starts: dict[int, list[float]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> Records:
        """Read a record file (missing file: nothing ran)."""
        records = cls()
        if not path.exists():
            return records
        for line in path.read_bytes().splitlines():
            seq, _, started = line.partition(b" ")
            if started:
                records.starts.setdefault(int(seq), []).append(float(started))
        return records

    def counted(self) -> dict[int, list[float]]:
        """The non-warm-up jobs (sequence numbers from 0)."""
        return {seq: times for seq, times in self.starts.items() if seq >= 0}

    def first_start(self) -> float | None:
        """The earliest start of any job, warm-up included."""
        times = [time for runs in self.starts.values() for time in runs]
        return min(times) if times else None

    def verify(self, count: int) -> str:
        """Return "" when jobs 0..count-1 each ran exactly once, else what went wrong."""
        counted = self.counted()
        ran = sum(1 for seq in range(count) if seq in counted)
        twice = sum(1 for seq in range(count) if len(counted.get(seq, ())) > 1)
        strangers = sum(1 for seq in counted if seq >= count)
        problems = []
        if ran != count:
            problems.append(f"ran {ran} of {count}")
        if twice:
            problems.append(f"{twice} ran more than once")
        if strangers:
            problems.append(f"{strangers} unknown job(s) ran")
        return ", ".join(problems)

    def drain_rate(self, count: int) -> float:
        """Jobs per second between the first and the last start of jobs 0..count-1."""
        starts = [min(times) for seq, times in self.counted().items() if seq < count]
        if len(starts) < 2:
            raise MeasurementError(f"only {len(starts)} job(s) ran; no rate")
        window = max(starts) - min(starts)
        return (len(starts) - 1) / window if window > 0 else float("inf")

    def latencies(self, pushed: Mapping[int, float]) -> list[float]:
        """Milliseconds from each push to the start of the same job."""
        counted = self.counted()
        return [(min(counted[seq]) - at) * 1000 for seq, at in pushed.items() if seq in counted]


def count_lines(path: Path) -> int:
    """Count the non-warm-up records in `path` (lines not starting with '-')."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    return data.count(b"\n") - data.count(b"\n-") - (1 if data.startswith(b"-") else 0)


def wait_for_records(
    path: Path,
    count: int,
    timeout: float,
    worker: WorkerProcess | None = None,
    warm_up: bool = False,
) -> None:
    """Wait until `count` jobs (or, with `warm_up`, a warm-up job) have recorded their start.

    Returns early when `worker` exits (a worker that stops when the queue is
    empty); raises `MeasurementError` on timeout or when the worker died
    with an error.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _enough(path, count, warm_up):
            return
        if worker is not None and worker.poll() is not None:
            time.sleep(0.2)  # let the last appends land
            if _enough(path, count, warm_up) or worker.poll() == 0:
                return
            raise MeasurementError(f"worker exited {worker.poll()}: {worker.last_error()}")
        time.sleep(POLL)
    done = count_lines(path)
    raise MeasurementError(
        f"timed out after {timeout:.0f}s: "
        + ("the warm-up job did not run" if warm_up else f"{done} of {count} jobs ran")
    )


def _enough(path: Path, count: int, warm_up: bool) -> bool:
    if warm_up:
        data = path.read_bytes() if path.exists() else b""
        return data.startswith(b"-") or b"\n-" in data
    return count_lines(path) >= count


# Worker processes -------------------------------------------------------------------


class WorkerProcess:
    """A worker started by the harness, in its own process group, always stopped at exit."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, log: Path):
        self.argv = list(argv)
        self.log = log
        self._log_file = log.open("wb")
        self.started_at = time.time()
        self.process = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The worker's process id."""
        return self.process.pid

    def poll(self) -> int | None:
        """The exit code, or None while it runs."""
        return self.process.poll()

    def wait(self, timeout: float) -> int | None:
        """Wait up to `timeout` seconds for the worker to exit on its own."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the worker's process group, then SIGKILL what is left after `grace`."""
        try:
            if self.process.poll() is None:
                self._signal(signal.SIGTERM)
                if self.wait(grace) is None:
                    self._signal(signal.SIGKILL)
                    self.process.wait(10)
            # Children the worker started (a prefork pool) may outlive it.
            self._signal(signal.SIGKILL)
        finally:
            self._log_file.close()

    def _signal(self, number: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, number)

    def last_error(self) -> str:
        """The last line the worker printed (its error, when it failed)."""
        self._log_file.flush()
        return last_line(self.log.read_text(errors="replace"))[:200] or "(no output)"


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` and all its descendants, in MiB (Linux /proc)."""
    total_kib = 0
    for member in _tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kib += int(line.split()[1])
    return total_kib / 1024


def _tree(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
            except OSError:
                continue
            pending.extend(int(child) for child in children)
    return found
