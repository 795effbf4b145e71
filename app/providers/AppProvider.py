"""Binds the application's services."""

from pathlib import Path

from app.services.outbox import Outbox
from providers import ServiceProvider
from providers.environment import env


class AppProvider(ServiceProvider):
    """Registers the `Outbox` the example jobs send mail through."""

    def register(self) -> None:
        """Bind one `Outbox` per process, writing to `storage/outbox.jsonl`."""
        root: Path = self.container.make("root")
        path = Path(env("OUTBOX_PATH", str(root / "storage" / "outbox.jsonl")))
        self.container.singleton(Outbox, lambda: Outbox(path))
