"""The pushing side of the benchmark, run in a child process (see `bench.child`).

A row names a pusher factory: a context manager that connects the way an
application would and yields `push(seq)`, which queues one no-op job. `run`
then pushes in one of three modes:

- `timed`: `count` single pushes back to back; returns the elapsed seconds.
- `paced`: `count` pushes at a steady `rate` per second; returns when each
  was pushed (taken just before the push call).
- `warm-up`: one warm-up job, so the harness can see that a worker is ready.
- `bulk`: with a bulk pusher factory, whose `push(seqs)` queues one job per
  number in one call: `count` jobs in calls of `BULK_SIZE`; returns the
  elapsed seconds.

Every mode first pushes one warm-up job (sequence number -1; `bulk`: one
call of `BULK_WARM_UP`), untimed, so that connecting and building drivers
is not counted as pushing.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from bench import probe

# Jobs per call of a bulk push, and in its untimed warm-up call.
BULK_SIZE = 100
BULK_WARM_UP = 2

Pusher = Callable[[int], Any]
BulkPusher = Callable[[list[int]], Any]
PusherFactory = Callable[..., AbstractContextManager[Pusher]]


def run(factory: str, options: dict[str, Any], mode: str, count: int, rate: float = 200.0) -> Any:
    """Push with the pusher `factory` ("module:function") in `mode`; see the module docstring."""
    module_name, _, name = factory.partition(":")
    make: PusherFactory = getattr(importlib.import_module(module_name), name)
    with make(**options) as push:
        if mode == "bulk":
            # Two jobs, so that whatever a many-job call sets up (amqp: its
            # confirm channel) is set up before the timing starts.
            push([probe.WARM_UP] * BULK_WARM_UP)
            return {"elapsed": timed_bulk(push, count)}
        push(probe.WARM_UP)
        if mode == "warm-up":
            return {}
        if mode == "timed":
            return {"elapsed": timed(push, count)}
        if mode == "paced":
            return paced(push, count, rate)
    raise ValueError(f"unknown push mode {mode!r}")


def timed(push: Pusher, count: int) -> float:
    """Push jobs 0..count-1 back to back and return the seconds it took."""
    started = time.perf_counter()
    for seq in range(count):
        push(seq)
    return time.perf_counter() - started


def timed_bulk(push: BulkPusher, count: int) -> float:
    """Push jobs 0..count-1 in calls of `BULK_SIZE` and return the seconds it took."""
    started = time.perf_counter()
    for first in range(0, count, BULK_SIZE):
        push(list(range(first, min(count, first + BULK_SIZE))))
    return time.perf_counter() - started


def paced(push: Pusher, count: int, rate: float) -> dict[str, Any]:
    """Push jobs 0..count-1 at `rate` per second; return when each was pushed.

    A push that falls behind the schedule is not made up by bursts beyond
    what the schedule allows; the rate actually reached is returned too.
    """
    interval = 1.0 / rate
    pushed: list[tuple[int, float]] = []
    start = time.monotonic() + 0.05
    for seq in range(count):
        delay = start + seq * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        pushed.append((seq, time.time()))
        push(seq)
    elapsed = time.monotonic() - start
    return {"pushed": pushed, "rate": count / elapsed if elapsed > 0 else rate}


def gated(hold: Callable[[], Any], push: Pusher, workers: int, count: int) -> float:
    """Time `count` pushes while all `workers` of an in-process pool are held still.

    `hold()` queues one `probe.hold` job; once every worker is blocked in one,
    the jobs are pushed (timed) and the gate opens, so the pool then drains
    a full queue, as a worker process does.
    """
    for _ in range(workers):
        hold()
    probe.wait_until_held(workers)
    try:
        return timed(push, count)
    finally:
        probe.gate.set()
