"""The floor: the job body with no queue at all, as fast as one process runs it."""

from __future__ import annotations

from bench import child
from bench.io.base import IoRow, IoRun, Round, judge
from bench.io.work import IN_FLIGHT


class FloorRow(IoRow):
    """`asyncio.gather` of the N coroutines under `asyncio.Semaphore(100)`, one process."""

    name = "floor"
    kind = "floor"
    broker = "memory"
    summary = (
        f"asyncio.gather of N coroutines of the job body under asyncio.Semaphore({IN_FLIGHT}), "
        "in one child process; no queue, no serialization."
    )

    def measure(self, run: IoRun) -> Round:
        starts, ends = run.file(self.name, "start", "rec"), run.file(self.name, "end", "rec")
        child.call(
            "bench.io.work:floor",
            {"count": run.jobs},
            env=self._environment(run, starts, ends),
            timeout=run.timeout(run.jobs),
        )
        return judge(starts, ends, run.jobs)
