"""What a registration is: a key, how its object is made, and how long that object lives."""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_UNSET: Any = object()


class Lifetime(enum.Enum):
    """How long an object a binding makes is used.

    * `TRANSIENT`: a new object wherever one is needed (`bind`),
    * `SINGLETON`: one object, made on first use, for the container's life,
    * `INSTANCE`: an object the application made and registered (`instance`),
    * `SCOPED`: one object per open scope, closed when the scope ends.
    """

    TRANSIENT = "transient"
    SINGLETON = "singleton"
    INSTANCE = "instance"
    SCOPED = "scoped"


@dataclass(eq=False, slots=True)
class Binding:
    """One registration. Compared by identity: a re-bind is a new binding.

    A singleton's object is kept here rather than in a compiled recipe, so it
    survives the recompiling that every later registration causes.
    """

    key: Any
    lifetime: Lifetime
    factory: Callable[..., Any] | None = None
    value: Any = _UNSET
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def label(self) -> str:
        """How error chains name this binding: the key, and the class built for it."""
        if isinstance(self.factory, type) and self.factory is not self.key:
            return f"{describe(self.key)} ({describe(self.factory)})"
        return describe(self.key)


def describe(key: Any) -> str:
    """Return a short, readable name for a binding key or a callable."""
    if isinstance(key, str):
        return repr(key)
    return getattr(key, "__qualname__", None) or getattr(key, "__name__", None) or repr(key)
