"""Jobs and queues: push job classes, instances or callables; drivers run them.

from queueing import Queueable, Queue
"""

from queueing.execution import JobRunner, Outcome, Result
from queueing.failed import FailedJob, FailedJobStore, LoggingFailedJobStore
from queueing.job import Queueable
from queueing.manager import Queue, UnknownDriverError
from queueing.payload import (
    CorruptPayloadError,
    Envelope,
    ForgedPayloadError,
    MissingKeyError,
    PayloadError,
    Signer,
)

__all__ = [
    "CorruptPayloadError",
    "Envelope",
    "FailedJob",
    "FailedJobStore",
    "ForgedPayloadError",
    "JobRunner",
    "LoggingFailedJobStore",
    "MissingKeyError",
    "Outcome",
    "PayloadError",
    "Queue",
    "Queueable",
    "Result",
    "Signer",
    "UnknownDriverError",
]
