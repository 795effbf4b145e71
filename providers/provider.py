"""`ServiceProvider`: the place where an application registers and starts its services."""

from __future__ import annotations

from container import Container


class ServiceProvider:
    """Base class for providers listed in `config/application.py` `PROVIDERS`.

    Bootstrap calls `register()` on every provider first, then `boot()` on
    every provider, so `boot()` may use what any provider registered.
    """

    def __init__(self, container: Container) -> None:
        self.container = container

    def register(self) -> None:
        """Bind services into `self.container`. Do not resolve other services here."""

    def boot(self) -> None:
        """Run once every provider is registered."""
