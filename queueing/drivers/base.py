"""The contract every driver keeps."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from queueing.payload import Envelope


class DriverUnavailableError(RuntimeError):
    """The driver's server (database, broker) cannot be reached right now."""

    # Whether trying again later may help; a server that refused for good says no.
    retryable = True


@dataclass(frozen=True)
class QueueCounts:
    """How many jobs one queue holds, by state, as `counts()` reports them."""

    connection: str
    queue: str
    pending: int
    delayed: int
    reserved: int
    oldest_pending_age: float | None


class Driver(ABC):
    """Moves envelopes; it never decides retries or failures (the runner does).

    `channel` means what the seed says it means for each driver: for `amqp`,
    `async`, `sync` and the fake it names the queue; for `database` it names
    the connection, and the queue is given separately.
    """

    name: str = "driver"
    default_queue: str = "default"

    def queue_for(self, channel: str | None, queue: str | None) -> str:
        """Return the queue name a push with this `channel`/`queue` goes to."""
        return queue or channel or self.default_queue

    @abstractmethod
    def push(self, envelopes: Sequence[Envelope], channel: str | None = None) -> None:
        """Queue `envelopes` (already signed); return once the driver holds them."""

    def close(self) -> None:  # noqa: B027 - most drivers hold nothing to close
        """Release connections and threads the driver holds."""
