"""Acknowledging a channel's deliveries in as few frames as their order allows.

Workers settle messages in any order, while one `multiple` acknowledgement
settles a whole run of delivery tags; this bookkeeping finds the runs. It
lives on the consumer thread, which owns the channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class AcknowledgementRuns:
    """What has been acknowledged on one channel, as a run of tags and the ones past it."""

    def __init__(self) -> None:
        # Every delivery tag up to `through` is acknowledged, and so are the
        # later tags in `ahead`; `last_tag` is the newest delivery seen here.
        self.through = 0
        self.ahead: set[int] = set()
        self.last_tag = 0

    def reset(self) -> None:
        """A new channel: its deliveries count from 1 again."""
        self.through, self.ahead, self.last_tag = 0, set(), 0

    def note(self, tag: int) -> None:
        """Follow the channel's delivery tags as deliveries reach this side."""
        if tag > self.last_tag + 1:
            # Tags never dispatched here went back to the broker with pika
            # (a cancelled consumer's): acknowledgement runs step over them.
            self.ahead.update(range(self.last_tag + 1, tag))
        self.last_tag = max(self.last_tag, tag)

    def send(self, channel: Any, tags: Sequence[int]) -> None:
        """Acknowledge `tags` on `channel`, as few frames as the settled runs of tags allow.

        The broker numbers a channel's deliveries 1, 2, 3, ...; once every
        delivery up to some tag is settled, one `multiple` acknowledgement of
        the newest of them covers the run. A settled delivery behind one still
        running or still buffered is acknowledged alone, at once, and counted
        so that later runs can step over it.
        """
        unsent = set(tags)
        through = self.through
        while through + 1 in unsent or through + 1 in self.ahead:
            through += 1
            self.ahead.discard(through)
        in_run = [tag for tag in unsent if tag <= through]
        if in_run:
            channel.basic_ack(max(in_run), multiple=True)
        self.through = through
        for tag in sorted(unsent - set(in_run)):
            channel.basic_ack(tag)
            self.ahead.add(tag)
