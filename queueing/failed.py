"""Failed jobs: the record of a job that used up its attempts, and where it goes."""

from __future__ import annotations

import logging
import os
import socket
import traceback
from dataclasses import dataclass, field
from typing import Protocol

from queueing.payload import Envelope

logger = logging.getLogger("queueing.failed")


@dataclass(frozen=True)
class FailedJob:
    """A job that failed for good, or a payload that was refused.

    `reason` is `failed` (the job raised on its last attempt), `signature`
    (the body was not signed with our key) or `corrupt` (the bytes are not a
    payload of ours). The envelope still holds the raw signed body, so a
    stored job can be re-queued, and a refused one inspected, unchanged.
    """

    envelope: Envelope
    reason: str
    exception_type: str
    message: str
    traceback: str
    failed_at: float
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)

    @classmethod
    def from_error(
        cls, envelope: Envelope, error: BaseException, failed_at: float, reason: str = "failed"
    ) -> FailedJob:
        """Build the record for `envelope` from the exception that ended it."""
        return cls(
            envelope=envelope,
            reason=reason,
            exception_type=type(error).__name__,
            message=str(error),
            traceback="".join(traceback.format_exception(error)),
            failed_at=failed_at,
        )


class FailedJobStore(Protocol):
    """Keeps failed jobs so an operator can inspect and retry them."""

    def store(self, failure: FailedJob) -> None:
        """Record `failure`."""
        ...


class LoggingFailedJobStore:
    """The store used when no `failed_jobs` table is configured: it logs, loudly."""

    def store(self, failure: FailedJob) -> None:
        """Log the failure with everything needed to find it again."""
        envelope = failure.envelope
        logger.error(
            "job %s (%s) on queue %r %s after %d attempt(s): %s: %s\n%s"
            "It is not stored: no failed_jobs table is configured "
            "(run `craft queue:table --failed` and `craft migrate` to keep failed jobs).",
            envelope.id,
            envelope.name,
            envelope.queue,
            "failed" if failure.reason == "failed" else f"was refused ({failure.reason})",
            envelope.attempts,
            failure.exception_type,
            failure.message,
            failure.traceback,
        )
