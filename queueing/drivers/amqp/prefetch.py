"""How many messages the consumer takes, as jobs run long and suspects wait.

A worker prefetches so the next job is at hand, but a job that runs long
should not sit on messages other workers could run: those are given back,
and the consumer takes fewer until jobs are short again.
"""

from __future__ import annotations

# A job running this long has the messages prefetched behind it given back.
LONG_JOB_SECONDS = 1.0


class Prefetching:
    """The consumer's way of taking messages, and when it changes.

    `mode` is "full" (consume with the full prefetch), "held" (no consumer
    while a long job runs), "one" (one message at a time after a long job,
    until one ends without running long) or "isolated" (no consumer: suspects
    are taken one by one). `switch_to` is the prefetch to consume with once
    the next acknowledgements go out, when it must change. The consumer reads
    and changes this under its own lock.
    """

    def __init__(self, prefetch: int) -> None:
        self.prefetch = prefetch
        self.mode = "full"
        # The delivery tags whose jobs ran long.
        self.long: set[int] = set()
        self.switch_to: int | None = None

    def reset(self) -> None:
        """A new connection consumes with the full prefetch."""
        self.mode, self.long, self.switch_to = "full", set(), None

    def acknowledged(self, tag: int) -> None:
        """The job of `tag` settled: after a long job, take one at a time, then all again."""
        if self.mode == "held" and tag in self.long:
            # The long job ended: take the next message, one at a time.
            self.mode, self.switch_to = "one", 1
        elif self.mode == "one" and tag not in self.long:
            # A job ended without running long: prefetch in full again.
            self.mode, self.switch_to = "full", self.prefetch
        self.long.discard(tag)

    def running_long(self, tag: int) -> bool:
        """The job of `tag` runs long; say whether the consumers must be cancelled for it."""
        self.long.add(tag)
        cancel = self.mode == "full"
        if cancel:
            self.mode = "held"
        return cancel

    def isolate(self) -> None:
        """Take no messages but suspects, one by one."""
        self.mode, self.switch_to = "isolated", None

    def resume(self) -> None:
        """No suspect waits: consume with the full prefetch."""
        self.mode = "full"

    def take_switch(self) -> int | None:
        """The prefetch asked for since the last acknowledgements went out, if any."""
        switch, self.switch_to = self.switch_to, None
        return switch
