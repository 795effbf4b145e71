"""Delays without blocking a queue: holding queues whose messages expire into it.

A message due later waits in `<queue>.delay.<ms>`; how long a delay becomes
and which holding queues this process knows of are decided here.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from typing import Any

# An idle holding queue outlives its last message by this long before the
# broker deletes it; every delayed publish declares it again first.
HOLDING_QUEUE_SLACK_MS = 60_000
# How far below a step a delay may fall and still be rounded down to it.
FLOAT_SLACK_MS = 0.01


def holding_delay(seconds: float) -> int:
    """Return the milliseconds a message due in `seconds` spends in a holding queue.

    The delay is rounded up to a multiple of the power of ten of milliseconds
    that is about 1% of it (1 s -> steps of 10 ms, 10 minutes -> steps of
    1 s), so pushes a few milliseconds apart share a holding queue and none
    leaves it before it is due. Delays just short of a power of ten take the
    next step up, so `wait=1`, published 3 ms after it was computed, still
    becomes 1000 ms. 0 means due now.
    """
    milliseconds = seconds * 1000
    if milliseconds < 0.5:
        return 0
    step = 10 ** max(0, math.floor(math.log10(milliseconds * 1.02)) - 2)
    # Epoch seconds subtract with an error of a few ten-thousandths of a
    # millisecond; without this slack an exact 1000 ms could become 1010.
    return math.ceil((milliseconds - FLOAT_SLACK_MS) / step) * step


def holding_queue_name(queue: str, milliseconds: int) -> str:
    """Return the name of the holding queue that delays messages of `queue`."""
    return f"{queue}.delay.{milliseconds}"


def holding_queue_arguments(queue: str, milliseconds: int) -> dict[str, Any]:
    """The arguments of the holding queue that keeps messages of `queue` `milliseconds` long.

    Its messages expire into `queue` (the default exchange routes by queue
    name), and the queue itself expires once idle past its last message.
    """
    return {
        "x-message-ttl": milliseconds,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
        "x-expires": milliseconds + HOLDING_QUEUE_SLACK_MS,
    }


class HoldingQueues:
    """The holding queues this process has published to, by the queue they delay.

    AMQP cannot list queues, so counting and clearing delayed jobs can only
    see these; any thread may add to them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_queue: dict[str, set[str]] = {}

    def add(self, queue: str, holding: str) -> None:
        """Remember that `holding` delays messages of `queue`."""
        with self._lock:
            self._by_queue.setdefault(queue, set()).add(holding)

    def of(self, queues: Iterable[str]) -> list[str]:
        """The known holding queues of `queues`, sorted."""
        with self._lock:
            return sorted(name for queue in queues for name in self._by_queue.get(queue, ()))

    def forget(self, holding: str) -> None:
        """`holding` no longer exists (it expired)."""
        with self._lock:
            for names in self._by_queue.values():
                names.discard(holding)
