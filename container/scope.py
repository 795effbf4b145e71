"""Scopes: the objects of scoped bindings, one set per open scope, closed when it ends.

The open scope is kept in a `ContextVar`, so each thread, and each asyncio
task that opens its own scope, sees only its own objects. A thread starts
with no scope open, whatever its creator had open; an asyncio task starts in
a copy of its creator's context, so it shares its creator's scope until it
opens one of its own.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

from container.bindings import describe

logger = logging.getLogger(__name__)


class Scope:
    """One scope: a context manager that opens it, and the objects made while it is open.

    `Container.scope()` returns a new one for each `with` block. Entering it
    makes it the current scope; leaving it makes the previous one current
    again and closes every object made in it.
    """

    __slots__ = ("_current", "_token", "objects")

    def __init__(self, current: ContextVar[Scope | None]) -> None:
        self._current = current
        self._token: Token[Scope | None] | None = None
        # Binding -> object, in the order made (the order closing reverses).
        self.objects: dict[Any, Any] = {}

    def __enter__(self) -> Scope:
        if self._token is not None:
            raise RuntimeError("this scope is already open; call container.scope() again")
        self._token = self._current.set(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        token, self._token = self._token, None
        if token is not None:
            self._current.reset(token)
        if self.objects:
            self.close()

    def close(self) -> None:
        """Close every object made in this scope, the last made first.

        An object with a `close()` method is closed with it; a context
        manager is exited as if its block ended normally. An error while
        closing one object is logged and the others are still closed.
        """
        made_here, self.objects = self.objects, {}
        for made in reversed(made_here.values()):
            try:
                close = getattr(made, "close", None)
                if close is not None:
                    close()
                elif hasattr(made, "__exit__"):
                    made.__exit__(None, None, None)
            except Exception:
                logger.exception("closing %s at the end of its scope failed", describe(type(made)))
