"""Redelivered messages, which may have killed their worker, run alone.

A `redelivered` flag cannot tell a worker that died with the message in hand
from one that only had it prefetched, so such a message moves to its
queue's suspects queue and later runs with nothing else held (the package's
notes on attempts say how deaths are counted).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from queueing.payload import Envelope

# How often the consumer thread looks for suspects waiting to run alone.
SUSPECT_CHECK_SECONDS = 2.0


def suspects_queue_name(queue: str) -> str:
    """Return the name of the queue where redelivered messages of `queue` wait to run alone."""
    return f"{queue}.suspects"


@dataclass(frozen=True, slots=True)
class ToSuspects:
    """A copy of a job for its queue's suspects queue.

    `unconfirmed_death` says its delivery before this copy may have killed
    its worker: it travels in the message's headers.
    """

    envelope: Envelope
    unconfirmed_death: bool

    @classmethod
    def after_certain_death(cls, again: Envelope, unconfirmed_death: bool) -> ToSuspects:
        """The copy of a suspect that died running alone, with both deaths counted.

        `again` already counts the certain death (the suspect came back
        redelivered); a job that kills its worker alone is taken to have
        killed the one before too, so the unconfirmed death is added here.
        """
        counted = replace(again, attempts=again.attempts + unconfirmed_death)
        return cls(counted, unconfirmed_death=False)
