"""The service container: bind services, resolve classes and call functions."""

from container.container import Container
from container.errors import ResolutionError, ScopeError
from container.scope import Scope

__all__ = ["Container", "ResolutionError", "Scope", "ScopeError"]
