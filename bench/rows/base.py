"""What a row is, and how a round of a row is measured.

A row is one system on one broker (ours on PostgreSQL, Celery on RabbitMQ,
the raw pika floor, ...). One round of a row fills these cells:

- `push`: single pushes per second, one job per call, from one client.
- `push_bulk`: jobs per second pushed `bench.pushing.BULK_SIZE` per call
  (`push(*jobs)`), for the rows that have such a call.
- `drain_c1`: jobs per second one worker process with one consumer runs
  from a full queue.
- `drain_default`: the same with the system's default concurrency.
- `p50`, `p99`: milliseconds from push to job start at a steady rate.
- `rss`: resident memory of an idle, started worker (its process tree).

`WorkerRow` measures systems whose jobs run in a worker process the harness
starts; `InProcessRow` measures pools inside the pushing process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench import child, probe, servers
from bench.measure import (
    MeasurementError,
    Records,
    WorkerProcess,
    percentile,
    rss_mib,
    wait_for_records,
)
from bench.pushing import BULK_WARM_UP

COLUMNS = ("push", "push_bulk", "drain_c1", "drain_default", "p50", "p99", "rss")
Concurrency = Literal["c1", "default"]
IDLE_SETTLE = 1.0  # seconds a worker idles after its warm-up job before its memory is read


class NotApplicable(Exception):
    """The cell does not apply to this row; the table shows "-"."""


@dataclass
class Run:
    """What every row needs to know about the run in progress."""

    jobs: int
    latency_jobs: int
    rate: float
    workdir: Path
    key: str
    _files: Iterator[int] = field(default_factory=itertools.count)

    def file(self, row: str, step: str, suffix: str) -> Path:
        """A fresh path in the run's scratch directory."""
        return self.workdir / f"{row}-{step}-{next(self._files)}.{suffix}"

    def environment(self, **overrides: str) -> dict[str, str]:
        """This process's environment without bench variables, plus `overrides`."""
        base = {name: value for name, value in os.environ.items() if not name.startswith("BENCH_")}
        base["PYTHONUNBUFFERED"] = "1"
        base.update(overrides)
        return base

    def timeout(self, count: int) -> float:
        """How long `count` jobs may take to push or drain (at least 20 per second)."""
        return 60.0 + count / 20.0


@dataclass
class RoundResult:
    """The cells one round of one row filled, and what went wrong."""

    # The cells, and figures only targets use (`seal`: seconds to serialize and sign a job).
    values: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    # A cell measured, but with a problem (jobs missing or run twice): shown with "!".
    flags: dict[str, str] = field(default_factory=dict)
    # Seconds from a worker's start to its first job, by step.
    startup: dict[str, float] = field(default_factory=dict)
    not_applicable: set[str] = field(default_factory=set)
    # The default concurrency, when only the round can tell (a configured pool size).
    concurrency: str | None = None

    @contextlib.contextmanager
    def step(self, *columns: str) -> Iterator[None]:
        """Fill `columns` in the block; an error there is noted and the round goes on."""
        try:
            yield
        except NotApplicable:
            self.not_applicable.update(column for column in columns if column not in self.values)
        except Exception as error:
            message = brief(error)
            for column in columns:
                if column not in self.values:
                    self.errors[column] = message


def brief(error: BaseException) -> str:
    """One short line for a table cell's footnote."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    name = type(error).__name__
    if isinstance(error, MeasurementError | child.ChildError):
        return text[:160]
    return f"{name}: {text}"[:160] if text else name


@dataclass(frozen=True)
class WorkerSpec:
    """How to start a worker process for a row."""

    argv: list[str]
    concurrency: str
    env: Mapping[str, str] = field(default_factory=dict)
    exits_when_empty: bool = False


class Row(ABC):
    """One system on one broker, with its column values for a round."""

    name: str = ""
    kind: str = ""  # "ours", "raw" or "peer"
    broker: str = ""  # "rabbitmq", "postgresql", "mariadb", "sqlite", "redis", "memory"
    floor: str | None = None  # the raw row this one is compared with
    summary: str = ""  # what the row measures, for the report
    packages: tuple[str, ...] = ()  # importable modules the row needs
    servers: tuple[str, ...] = ()  # keys of `bench.servers.SERVERS`
    default_concurrency: str = "1"

    def unavailable(self, run: Run) -> str | None:
        """Why this row cannot run here (package, server, module), or None."""
        missing = [name for name in self.packages if importlib.util.find_spec(name) is None]
        if missing:
            return f"not installed: {', '.join(missing)} (pip install -e '.[bench]')"
        for server in self.servers:
            problem = servers.down(server)
            if problem:
                return problem
        return self.check(run)

    def check(self, run: Run) -> str | None:
        """Row-specific availability check; None when the row can run."""
        return None

    def setup(self, run: Run) -> None:  # noqa: B027 - most rows need nothing
        """Create what the row needs (tables, schema) before a round."""

    def cleanup(self, run: Run) -> None:  # noqa: B027 - most rows need nothing
        """Remove what `setup` and the round left behind."""

    @abstractmethod
    def measure(self, run: Run) -> RoundResult:
        """Measure one round."""


class WorkerRow(Row):
    """A system whose jobs run in a worker process the harness starts.

    Subclasses name the pusher factory (`pusher`, run in a child process by
    `bench.pushing`) and say how to start a worker (`worker`).
    """

    pusher: str = ""
    bulk_pusher: str = ""  # a factory pushing many jobs per call, when the system has one
    latency: bool = True  # False where the worker only polls (the raw SQL loops)

    def pusher_options(self, run: Run) -> dict[str, Any]:
        """Keyword arguments of the pusher factory."""
        return {}

    def env(self, run: Run) -> dict[str, str]:
        """Environment variables the pusher and the worker both need."""
        return {}

    @abstractmethod
    def worker(
        self, run: Run, concurrency: Concurrency, stop_when_empty: bool
    ) -> WorkerSpec | None:
        """How to start the worker; None for `default` when it is the same as `c1`."""

    def purge(self, run: Run) -> int:
        """Remove every job left in the row's queue; return how many there were."""
        return 0

    # One round ------------------------------------------------------------------------

    def measure(self, run: Run) -> RoundResult:
        """Push and drain at c=1, drain at the default concurrency, then latency and memory."""
        result = RoundResult()
        with result.step("push", "drain_c1"):
            self.purge(run)
            records = run.file(self.name, "c1", "rec")
            elapsed = self._push(run, records, run.jobs)
            result.values["push"] = run.jobs / elapsed
            spec = self.worker(run, "c1", stop_when_empty=True)
            assert spec is not None
            self._drain(run, spec, records, "drain_c1", result)
        with result.step("push_bulk"):
            self._push_bulk(run, result)
        with result.step("drain_default"):
            spec = self.worker(run, "default", stop_when_empty=True)
            if spec is None:  # the default is c=1: the same measurement
                if "drain_c1" in result.values:
                    result.values["drain_default"] = result.values["drain_c1"]
                if "drain_c1" in result.flags:
                    result.flags["drain_default"] = result.flags["drain_c1"]
            else:
                self.purge(run)
                records = run.file(self.name, "default", "rec")
                self._push(run, records, run.jobs)
                self._drain(run, spec, records, "drain_default", result)
        with result.step("rss", "p50", "p99"):
            self.purge(run)
            self._latency_and_memory(run, result)
        return result

    def _environment(
        self, run: Run, records: Path, extra: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        return run.environment(
            **self.env(run), **(extra or {}), **{probe.RECORD_VARIABLE: str(records)}
        )

    def _push_bulk(self, run: Run, result: RoundResult) -> None:
        """Time `run.jobs` jobs pushed in bulk calls, then check they are all queued."""
        if not self.bulk_pusher:
            raise NotApplicable
        self.purge(run)
        records = run.file(self.name, "bulk", "rec")
        elapsed = self._push(run, records, run.jobs, mode="bulk")
        queued = self.purge(run)
        pushed = run.jobs + BULK_WARM_UP
        if queued != pushed:
            result.flags["push_bulk"] = f"{queued} queued of {pushed} pushed"
        result.values["push_bulk"] = run.jobs / elapsed

    def _push(self, run: Run, records: Path, count: int, mode: str = "timed") -> Any:
        """Push `count` jobs from a child process (see `bench.pushing.run`)."""
        outcome = child.call(
            "bench.pushing:run",
            {
                "factory": self.bulk_pusher if mode == "bulk" else self.pusher,
                "options": self.pusher_options(run),
                "mode": mode,
                "count": count,
                "rate": run.rate,
            },
            env=self._environment(run, records),
            timeout=run.timeout(count) + (count / run.rate if mode == "paced" else 0.0),
        )
        return outcome["elapsed"] if mode in ("timed", "bulk") else outcome

    def _drain(
        self, run: Run, spec: WorkerSpec, records: Path, column: str, result: RoundResult
    ) -> None:
        log = run.file(self.name, column, "log")
        environment = self._environment(run, records, spec.env)
        with WorkerProcess(spec.argv, environment, child.ROOT, log) as worker:
            wait_for_records(records, run.jobs, run.timeout(run.jobs), worker)
            if spec.exits_when_empty:
                worker.wait(30)
        done = Records.read(records)
        problem = done.verify(run.jobs)
        left = self.purge(run)
        if left:
            problem = ", ".join(filter(None, [problem, f"{left} left in the queue"]))
        result.values[column] = done.drain_rate(run.jobs)
        if problem:
            result.flags[column] = problem
        first = done.first_start()
        if first is not None:
            result.startup[column] = first - worker.started_at

    def _latency_and_memory(self, run: Run, result: RoundResult) -> None:
        spec = self.worker(run, "c1", stop_when_empty=False)
        assert spec is not None
        records = run.file(self.name, "latency", "rec")
        log = run.file(self.name, "latency", "log")
        environment = self._environment(run, records, spec.env)
        with WorkerProcess(spec.argv, environment, child.ROOT, log) as worker:
            self._push(run, records, 0, mode="warm-up")
            wait_for_records(records, 0, 60.0, worker, warm_up=True)
            time.sleep(IDLE_SETTLE)
            result.values["rss"] = rss_mib(worker.pid)
            if not self.latency:
                raise NotApplicable
            count = run.latency_jobs
            outcome = self._push(run, records, count, mode="paced")
            wait_for_records(records, count, count / run.rate + 60.0, worker)
        fill_latency(result, Records.read(records), outcome, count, run.rate)


def fill_latency(
    result: RoundResult, records: Records, outcome: Mapping[str, Any], count: int, rate: float
) -> None:
    """Put p50 and p99 of push-to-start into `result`, flagging missing jobs."""
    pushed = {int(seq): float(at) for seq, at in outcome["pushed"]}
    latencies = records.latencies(pushed)
    if not latencies:
        raise MeasurementError("no job of the latency run started")
    result.values["p50"] = percentile(latencies, 0.50)
    result.values["p99"] = percentile(latencies, 0.99)
    problem = records.verify(count)
    if float(outcome.get("rate", rate)) < 0.9 * rate:
        reached = float(outcome["rate"])
        problem = ", ".join(filter(None, [problem, f"pushes reached only {reached:.0f}/s"]))
    if problem:
        result.flags["p50"] = result.flags["p99"] = problem


class InProcessRow(Row):
    """A pool inside the pushing process: the child function does push and drain at once.

    `target` names a function run in a child (`bench.child`) as
    `target(step=..., count=..., rate=...)`; for the steps `c1` and
    `default` it returns the seconds the timed pushes took, after every job
    ran; for `latency` it returns the pushes made at the steady rate.
    """

    broker = "memory"
    target: str = ""
    drains: bool = True  # False for a driver that runs jobs inside push()

    def env(self, run: Run, step: str) -> dict[str, str]:
        """Environment variables of the child for `step`."""
        return {}

    def measure(self, run: Run) -> RoundResult:
        """Push and drain (c=1, then default), then latency; memory does not apply."""
        result = RoundResult()
        result.not_applicable.update({"rss", "push_bulk"})
        columns = ("push", "drain_c1") if self.drains else ("push",)
        if not self.drains:
            result.not_applicable.update({"drain_c1", "drain_default"})
        with result.step(*columns):
            records = run.file(self.name, "c1", "rec")
            outcome = self._call(run, "c1", records, run.jobs)
            result.values["push"] = run.jobs / outcome["elapsed"]
            if "seal" in outcome:
                result.values["seal"] = outcome["seal"]
            if self.drains:
                self._drained(run, records, "drain_c1", result)
        if self.drains:
            with result.step("drain_default"):
                records = run.file(self.name, "default", "rec")
                outcome = self._call(run, "default", records, run.jobs)
                result.concurrency = outcome.get("concurrency")
                self._drained(run, records, "drain_default", result)
        with result.step("p50", "p99"):
            records = run.file(self.name, "latency", "rec")
            outcome = self._call(run, "latency", records, run.latency_jobs)
            fill_latency(result, Records.read(records), outcome, run.latency_jobs, run.rate)
        return result

    def _call(self, run: Run, step: str, records: Path, count: int) -> Any:
        return child.call(
            self.target,
            {"step": step, "count": count, "rate": run.rate},
            env=run.environment(**self.env(run, step), **{probe.RECORD_VARIABLE: str(records)}),
            timeout=run.timeout(count) + (count / run.rate if step == "latency" else 0),
        )

    @staticmethod
    def _drained(run: Run, records: Path, column: str, result: RoundResult) -> None:
        done = Records.read(records)
        result.values[column] = done.drain_rate(run.jobs)
        problem = done.verify(run.jobs)
        if problem:
            result.flags[column] = problem
