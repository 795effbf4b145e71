"""Sends the welcome email; its `Outbox` comes from the container."""

from app.services.outbox import Outbox
from queueing import Queueable


class SendWelcomeEmail(Queueable):
    """Welcome a new user by email."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def handle(self, email: str) -> None:
        """Send the welcome message to `email`."""
        self.outbox.send(to=email, subject="Welcome!", body="Thanks for signing up.")

    def remind(self, email: str) -> None:
        """Remind `email` to finish signing up (push with `callback="remind"`)."""
        self.outbox.send(to=email, subject="Almost there", body="Finish signing up any time.")
