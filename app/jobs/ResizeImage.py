"""Makes a thumbnail of an uploaded image; tells the developers when it cannot."""

from pathlib import Path
from typing import Any

from app.services.outbox import Outbox
from queueing import Queueable


class ResizeImage(Queueable):
    """Writes `<name>.thumb` next to the image; retried twice, 1 s apart, then failed."""

    run_times = 3
    retry_delay = 1

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def handle(self, path: str) -> None:
        """Create the thumbnail of the image at `path`."""
        image = Path(path)
        data = image.read_bytes()  # FileNotFoundError when the upload is gone
        image.with_suffix(".thumb").write_bytes(data[:1024])

    def failed(self, payload: dict[str, Any], error: BaseException) -> None:
        """Tell the developers which image could not be resized, and why."""
        self.outbox.send(
            to="developers@example.com",
            subject=f"ResizeImage failed after {payload['ran']} attempts",
            body=f"{payload['args']}: {error}",
        )
