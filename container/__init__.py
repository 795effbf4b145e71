"""The service container: bind services, resolve classes and call functions."""

from container.container import Container, ResolutionError

__all__ = ["Container", "ResolutionError"]
