"""What every benchmark job does: note its sequence number and the time it started.

This module is imported by the worker processes of every system measured
(ours, the raw floors and the peers), so it uses the standard library only:
anything imported here would count in each worker's memory.

A job calls `record(seq)`; the line `"<seq> <time.time()>"` is appended to
the file named by `$BENCH_RECORD`. Appends of one short line with
`O_APPEND` are atomic, so any number of processes and threads may write to
the same file. The harness counts the lines to know that exactly the pushed
jobs ran, and reads the times for drain rates and push-to-start latency.
Negative sequence numbers mark warm-up jobs, which are not counted.
"""

from __future__ import annotations

import os
import threading
import time

RECORD_VARIABLE = "BENCH_RECORD"
WARM_UP = -1

_descriptor: int | None = None
_descriptor_lock = threading.Lock()

# Holds in-process workers still while the harness pushes (see `hold`).
gate = threading.Event()
_held = threading.Semaphore(0)


def record(seq: int) -> None:
    """Append `seq` and the current time to the record file (nothing when none is set)."""
    started = time.time()
    descriptor = _descriptor if _descriptor is not None else _open()
    if descriptor >= 0:
        os.write(descriptor, f"{int(seq)} {started!r}\n".encode())


def _open() -> int:
    """Open the record file once per process; -1 when there is none."""
    global _descriptor
    with _descriptor_lock:
        if _descriptor is None:
            path = os.environ.get(RECORD_VARIABLE)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
            _descriptor = os.open(path, flags, 0o644) if path else -1
        return _descriptor


def hold() -> None:
    """Block the worker thread that runs this until `gate` is set (bounded to 10 minutes)."""
    _held.release()
    gate.wait(600)


def wait_until_held(count: int, timeout: float = 30.0) -> None:
    """Wait until `count` worker threads are blocked in `hold`."""
    deadline = time.monotonic() + timeout
    for _ in range(count):
        if not _held.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"fewer than {count} worker threads took the gate job")
