"""`Outbox`: a mail service that writes each message as a line of JSON to a file.

It stands in for a real mailer in the examples: a job that sends mail gets an
`Outbox` through its constructor, and anyone can read what was "sent".
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any


class Outbox:
    """Appends messages to `path`, one JSON object per line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def send(self, to: str, subject: str, body: str) -> None:
        """Record a message to `to`."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"to": to, "subject": subject, "body": body, "pid": os.getpid()})
        with self._lock, self.path.open("a", encoding="utf-8") as file:
            file.write(line + "\n")

    def messages(self) -> list[dict[str, Any]]:
        """Return every message sent so far."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line]
