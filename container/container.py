"""The service container: registrations, and resolution of constructors and callables.

Keys are classes or strings. What a key makes, and how long that object
lives, depends on how it was registered:

* `bind(key, concrete)`: a new object wherever one is needed,
* `singleton(key, concrete)`: one object, made on first use,
* `instance(key, value)`: the object given,
* `scoped(key, concrete)`: one object per open scope, closed when the scope ends.

`make(key)` resolves a key; a concrete class nobody bound is built from its
constructor's annotations, and so are the unbound classes it needs, to any
depth. `call(function, *args, **kwargs)` calls a function, taking what the
caller left open from the container by the same rules. The first `make` of a
key compiles it into a recipe (see `container.recipes`); every registration
drops the recipes, so a `swap` or a new `bind` is seen by the next `make`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import MethodType
from typing import Any, TypeVar

import punq

from container import calls
from container.bindings import Binding, Lifetime, describe
from container.errors import ResolutionError
from container.recipes import Compiler, NoScopeOpen, scope_error
from container.registry import Registry
from container.scope import Scope

T = TypeVar("T")


class Container:
    """Holds the application's bindings and builds objects from them.

    Autowiring: an unbound class is built when it is concrete (not abstract,
    not a Protocol, not an enumeration, not a builtin such as `str`); each of
    its constructor's parameters takes the binding of its annotation, else
    its default, else (for a concrete class) an object built the same way.
    Anything else is a `ResolutionError` naming the chain and the parameter:
    ``cannot build SendWelcomeEmail -> Mailer -> Transport: parameter 'host:
    str' has no binding``; a cycle is named as one (``A -> B -> A``).

    Scopes: objects of `scoped` bindings live in the scope open in the
    current thread or asyncio task (see `scope()`). Resolving one with no
    scope open raises `ScopeError`. A singleton that needs a scoped object
    (through its annotations) is refused with a `ResolutionError`, since it
    would keep that object after its scope closed it; a singleton's factory
    that calls `make` itself is not checked.

    Exceptions raised by the application's own constructors and factories
    pass through unchanged.
    """

    def __init__(self) -> None:
        self._registry = Registry()
        self._current: ContextVar[Scope | None] = ContextVar(
            f"container-scope-{id(self):x}", default=None
        )
        self._compiler = Compiler(self._registry, self._current)
        # The registry's caches, read on every `make` and `call`.
        self._recipes = self._registry.recipes
        self._direct_calls = self._registry.direct_calls
        self.instance(Container, self)

    # Registration -----------------------------------------------------------------

    def bind(self, key: Any, concrete: Any | None = None) -> Container:
        """Bind `key` to `concrete` (a class or factory), called on every resolution.

        With no `concrete`, the class `key` is bound to itself. The parameters
        of `concrete` are filled like any constructor's.
        """
        return self._register(key, concrete, Lifetime.TRANSIENT)

    def singleton(self, key: Any, concrete: Any | None = None) -> Container:
        """Bind `key` to `concrete`, made on first use and reused afterwards."""
        return self._register(key, concrete, Lifetime.SINGLETON)

    def scoped(self, key: Any, concrete: Any | None = None) -> Container:
        """Bind `key` to `concrete`, made at most once in each scope and closed when it ends.

        Inside one `with container.scope():` every `make` and `call` gets the
        same object; at the end of the block it is closed (`close()`, or
        `__exit__(None, None, None)` for a context manager).
        """
        return self._register(key, concrete, Lifetime.SCOPED)

    def instance(self, key: Any, value: Any) -> Container:
        """Bind `key` to the ready object `value`."""
        self._registry.add(Binding(key, Lifetime.INSTANCE, value=value))
        return self

    def _register(self, key: Any, concrete: Any | None, lifetime: Lifetime) -> Container:
        if concrete is None:
            if not isinstance(key, type):
                raise ResolutionError(
                    f"cannot bind {describe(key)}: a string key needs a class or factory to build"
                )
            concrete = key
        if not callable(concrete):
            raise ResolutionError(
                f"cannot bind {describe(key)}: {concrete!r} is neither a class nor a factory; "
                "use instance() for a ready object"
            )
        try:
            self._registry.add(Binding(key, lifetime, factory=concrete))
        except punq.InvalidForwardReferenceError as error:
            raise ResolutionError(f"cannot bind {describe(key)}: {error}") from error
        return self

    def has(self, key: Any) -> bool:
        """Say whether `key` has a binding."""
        return self._registry.lookup(key) is not None

    # Resolution -------------------------------------------------------------------

    def make(self, key: type[T] | str | Any) -> T | Any:
        """Resolve `key`: its binding, or, for an unbound concrete class, a new instance of it."""
        try:
            recipe = self._recipes.get(key)
            if recipe is not None:
                return recipe.build()
            return self._compiler.make(key)
        except NoScopeOpen as missing:
            raise self._scope_error(key, missing) from None

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call `function`, filling the parameters `args` and `kwargs` leave open.

        Parameters are filled in order. A parameter named in `kwargs` takes that
        value. A parameter whose annotation is bound takes the bound service,
        unless the next positional argument is already an instance of that
        annotation. Any other parameter takes the next positional argument,
        else its default, else, when its annotation is a concrete class, an
        object built as `make` builds it.
        """
        # The common case first, without a call: a job's bound method whose
        # parameters the container fills none of, given arguments that fit.
        if type(function) is MethodType and not kwargs:
            counts = self._direct_calls.get(function.__func__)
            if counts is not None and counts[0] <= len(args) <= counts[1]:
                return function(*args)
        return calls.call(self._registry, self._compiler, function, args, kwargs)

    def scope(self) -> Scope:
        """Open a scope for the `with` block: `with container.scope(): ...`.

        Scoped objects made inside the block belong to it and are closed when
        it ends, the last made first; an error while closing is logged, not
        raised. Scopes are per thread and per asyncio task (a `ContextVar`):
        a thread never sees another thread's scope. A scope opened inside
        another is a new, separate scope: it makes its own objects and closes
        them at its end, and the outer scope's objects come back after it.
        The queue's worker opens one scope around each attempt of each job.
        """
        return Scope(self._current)

    @contextmanager
    def swap(self, key: Any, replacement: Any) -> Iterator[Any]:
        """Resolve `key` to `replacement` inside the block, and to the original after.

        A class `replacement` is built on each resolution; anything else is used
        as it is. Bindings made inside the block belong to it and are dropped
        when it ends, whether it ends normally or with an exception.
        """
        saved = self._registry.open_layer()
        try:
            if isinstance(replacement, type):
                self.bind(key, replacement)
            else:
                self.instance(key, replacement)
            yield replacement
        finally:
            self._registry.close_layer(saved)

    def _scope_error(self, key: Any, missing: NoScopeOpen) -> ResolutionError:
        recipe = self._registry.cached(key)
        if recipe is None or recipe.binding is missing.binding:
            return missing
        return scope_error(recipe.label, "build", recipe.needs, missing.binding)
