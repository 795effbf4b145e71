"""What a row of the I/O-bound benchmark is, and how a round of it is judged.

Every row runs `bench.io.work.sleep_job` with `IN_FLIGHT` jobs at once in one
worker process. A round of a worker row pushes N jobs (untimed) from a child
process, then starts the worker on the full queue and waits until every job
recorded its end. Each row keeps its data apart (its own PostgreSQL schema,
RabbitMQ queue, Redis keys) and removes it in `cleanup`.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from bench import child, probe, servers
from bench.io.postgres import postgres_execute
from bench.io.work import FINISHED_VARIABLE, IN_FLIGHT
from bench.measure import Records, WorkerProcess, wait_for_records
from bench.rows.base import Run, WorkerSpec

DEFAULT_PREFETCH = 2 * IN_FLIGHT  # Dramatiq's own default for IN_FLIGHT threads


@dataclass
class IoRun(Run):
    """The run in progress, plus the PostgreSQL database and the prefetch the rows share."""

    database: str = "test"
    # Messages (amqp) or jobs (database) a worker holds beyond the ones running: ours
    # and Dramatiq get the same, so neither waits for the broker more than the other.
    prefetch: int = DEFAULT_PREFETCH


@dataclass
class Round:
    """What one round of one row measured."""

    rate: float | None = None  # jobs per second, first start to last end
    peak: int | None = None  # most jobs seen running at once
    problem: str = ""  # measured, but jobs missing, run twice or left queued
    error: str = ""  # not measured


class IoRow(ABC):
    """One system in the I/O-bound benchmark."""

    name = ""
    kind = ""  # "floor", "ours" or "peer"
    broker = ""  # "memory", "rabbitmq", "postgresql" or "redis"
    summary = ""  # how it runs, for the results file
    packages: tuple[str, ...] = ()  # importable modules it needs
    servers: tuple[str, ...] = ()  # keys of `bench.servers.SERVERS`

    def unavailable(self, run: IoRun) -> str | None:
        """Why this row cannot run here, or None."""
        missing = [name for name in self.packages if importlib.util.find_spec(name) is None]
        if missing:
            return f"not installed: {', '.join(missing)} (pip install -e '.[bench]')"
        for server in self.servers:
            problem = servers.down(server)
            if problem:
                return problem
        if "postgresql" in self.servers:
            try:
                postgres_execute(run.database, "SELECT 1")
            except Exception as error:
                return f"PostgreSQL database {run.database!r}: {type(error).__name__}: {error}"
        return None

    def setup(self, run: IoRun) -> None:  # noqa: B027 - not every row needs it
        """Create what the row needs before a round."""

    def cleanup(self, run: IoRun) -> None:  # noqa: B027 - not every row needs it
        """Remove what `setup` and the round left."""

    def env(self, run: IoRun) -> dict[str, str]:
        """Environment variables the pusher and the worker both need."""
        return {}

    @abstractmethod
    def measure(self, run: IoRun) -> Round:
        """Measure one round."""

    def _environment(self, run: IoRun, starts: Path, ends: Path) -> dict[str, str]:
        return run.environment(
            **self.env(run),
            **{probe.RECORD_VARIABLE: str(starts), FINISHED_VARIABLE: str(ends)},
        )


def judge(starts: Path, ends: Path, count: int, left: int = 0) -> Round:
    """Turn the start and end records of a round into its rate, peak and problems."""
    started, ended = Records.read(starts), Records.read(ends)
    problems = [
        f"{label}: {problem}"
        for label, problem in (("starts", started.verify(count)), ("ends", ended.verify(count)))
        if problem
    ]
    if left:
        problems.append(f"{left} left in the queue")
    first = [min(times) for seq, times in started.counted().items() if seq < count]
    last = [max(times) for seq, times in ended.counted().items() if seq < count]
    if not first or not last:
        return Round(error="no job ran to its end")
    window = max(last) - min(first)
    return Round(
        rate=len(last) / window if window > 0 else float("inf"),
        peak=peak_in_flight(started, ended),
        problem=", ".join(problems),
    )


def peak_in_flight(started: Records, ended: Records) -> int:
    """The most jobs between their start and their end at any one time."""
    events = [(min(times), 1) for times in started.counted().values()]
    events += [(max(times), -1) for times in ended.counted().values()]
    running = peak = 0
    for _, change in sorted(events):  # at equal times an end (-1) sorts first
        running += change
        peak = max(peak, running)
    return peak


class WorkerIoRow(IoRow):
    """A system whose jobs are pushed first, then drained by one worker process."""

    pusher = ""  # "module:function(count)" run in a child process

    @abstractmethod
    def worker(self, run: IoRun) -> WorkerSpec:
        """How to start the worker."""

    def left(self, run: IoRun) -> int:
        """How many jobs are still queued after the drain."""
        return 0

    def measure(self, run: IoRun) -> Round:
        starts, ends = run.file(self.name, "start", "rec"), run.file(self.name, "end", "rec")
        environment = self._environment(run, starts, ends)
        child.call(self.pusher, {"count": run.jobs}, env=environment, timeout=run.timeout(run.jobs))
        spec = self.worker(run)
        log = run.file(self.name, "worker", "log")
        worker_environment = {**environment, **spec.env}
        with WorkerProcess(spec.argv, worker_environment, child.ROOT, log) as worker:
            wait_for_records(ends, run.jobs, run.timeout(run.jobs), worker)
            if spec.exits_when_empty:
                worker.wait(30)
        return judge(starts, ends, run.jobs, self.left(run))
