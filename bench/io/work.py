"""The one job body every system runs: note the start, sleep 50 ms, note the end.

Stdlib only, like `bench.probe`, because every worker imports it. The start
goes to `$BENCH_RECORD` (`bench.probe.record`), the end to `$BENCH_FINISHED`,
both as `"<seq> <time.time()>"` lines appended atomically. A round's rate is
the jobs over the span from the first start to the last end, so it counts
the sleeping and not the worker's start-up.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

from bench.probe import record

SLEEP = 0.05  # seconds each job awaits
IN_FLIGHT = 100  # jobs running at once, in every system
FINISHED_VARIABLE = "BENCH_FINISHED"

_descriptor: int | None = None
_descriptor_lock = threading.Lock()


async def sleep_job(seq: int) -> None:
    """Record the start, await `SLEEP` seconds, record the end."""
    record(seq)
    await asyncio.sleep(SLEEP)
    finished(seq)


def finished(seq: int) -> None:
    """Append `seq` and the current time to the end file (nothing when none is set)."""
    ended = time.time()
    descriptor = _descriptor if _descriptor is not None else _open()
    if descriptor >= 0:
        os.write(descriptor, f"{int(seq)} {ended!r}\n".encode())


def _open() -> int:
    global _descriptor
    with _descriptor_lock:
        if _descriptor is None:
            path = os.environ.get(FINISHED_VARIABLE)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
            _descriptor = os.open(path, flags, 0o644) if path else -1
        return _descriptor


def floor(count: int) -> dict[str, float]:
    """The floor, run in a child: `count` jobs under `asyncio.Semaphore(IN_FLIGHT)`, gathered."""

    async def bounded(gate: asyncio.Semaphore, seq: int) -> None:
        async with gate:
            await sleep_job(seq)

    async def everything() -> None:
        gate = asyncio.Semaphore(IN_FLIGHT)
        await asyncio.gather(*(bounded(gate, seq) for seq in range(count)))

    started = time.perf_counter()
    asyncio.run(everything())
    return {"elapsed": time.perf_counter() - started}
