"""Queue drivers: adapters that move envelopes; the policy lives in `execution`."""

from queueing.drivers.asynchronous import AsyncDriver
from queueing.drivers.base import Driver
from queueing.drivers.sync import SyncDriver

__all__ = ["AsyncDriver", "Driver", "SyncDriver"]
