"""{name}: say here what this job does."""

from queueing import Queueable


class {name}(Queueable):
    """Say here what one run of this job does."""

    def __init__(self) -> None:
        # Annotated parameters are built by the container of the process that
        # runs the job, e.g. `def __init__(self, outbox: Outbox) -> None:`.
        pass

    def handle(self) -> None:
        """Do the work; arguments come from `queue.push({name}, args=[...])`."""
