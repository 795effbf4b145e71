"""The service container: bindings, and resolution of constructors and callables.

Registrations live in a `punq` container; this module adds what an application
needs on top of it: string keys next to class keys, building classes that were
never bound, calling functions with their annotated parameters filled in, a
`swap` for tests, and one error type that says exactly what could not be built.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, get_type_hints

import punq

T = TypeVar("T")

_MISSING = inspect.Parameter.empty


class ResolutionError(LookupError):
    """Raised when the container cannot build a class or fill a parameter.

    The message names what was being built, the parameter and its annotation,
    for example ``cannot build SendWelcomeEmail: parameter 'mailer: Mailer'
    has no binding``.
    """


def describe(key: Any) -> str:
    """Return a short, readable name for a binding key or a callable."""
    if isinstance(key, str):
        return repr(key)
    return getattr(key, "__qualname__", None) or getattr(key, "__name__", None) or repr(key)


@dataclass(frozen=True)
class _Name:
    """A string key as punq sees it: punq would parse a bare string as Python code."""

    text: str


def _registry_key(key: Any) -> Any:
    return _Name(key) if isinstance(key, str) else key


def _annotation_name(annotation: Any) -> str:
    if annotation is _MISSING:
        return ""
    return describe(annotation) if isinstance(annotation, type) else str(annotation)


def _parameter_text(parameter: inspect.Parameter, annotation: Any) -> str:
    if annotation is _MISSING:
        return f"'{parameter.name}'"
    return f"'{parameter.name}: {_annotation_name(annotation)}'"


class Container:
    """Holds the application's bindings and builds objects from them.

    * `bind(key, concrete)` registers a class (or factory) built anew each time,
    * `singleton(key, concrete)` registers one built once and then reused,
    * `instance(key, value)` registers a ready object.

    Keys are classes or strings. `make(key)` resolves a key; a class that was
    never bound is built from its constructor's annotations. `call(fn, *args)`
    calls a function, taking annotated parameters that `args` do not cover
    from the container.
    """

    def __init__(self) -> None:
        self._registry = punq.Container()
        # punq cannot say whether a key is bound, or to what, without building
        # it; error messages need both, so each binding is recorded here too,
        # one layer per `swap` block.
        self._bindings: list[dict[Any, Any]] = [{}]
        self.instance(Container, self)

    # Registration -----------------------------------------------------------------

    def bind(self, key: Any, concrete: Any | None = None) -> Container:
        """Bind `key` to `concrete` (a class or factory), built on every `make`.

        With no `concrete`, the class `key` is bound to itself.
        """
        return self._register(key, concrete, punq.Scope.transient)

    def singleton(self, key: Any, concrete: Any | None = None) -> Container:
        """Bind `key` to `concrete`, built on first use and reused afterwards."""
        return self._register(key, concrete, punq.Scope.singleton)

    def instance(self, key: Any, value: Any) -> Container:
        """Bind `key` to the ready object `value`."""
        self._registry.register(_registry_key(key), instance=value)
        self._bindings[-1][key] = None
        return self

    def _register(self, key: Any, concrete: Any | None, scope: punq.Scope) -> Container:
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
            if concrete is key:
                self._registry.register(key, scope=scope)
            else:
                self._registry.register(_registry_key(key), concrete, scope=scope)
        except punq.InvalidForwardReferenceError as error:
            raise ResolutionError(f"cannot bind {describe(key)}: {error}") from error
        self._bindings[-1][key] = concrete
        return self

    def has(self, key: Any) -> bool:
        """Say whether `key` has a binding."""
        return any(key in layer for layer in self._bindings)

    # Resolution -------------------------------------------------------------------

    def make(self, key: type[T] | str | Any) -> T | Any:
        """Resolve `key`: its binding, or, for an unbound class, a new instance of it."""
        try:
            if self.has(key):
                return self._registry.resolve(_registry_key(key))
            if isinstance(key, type):
                return self._registry.instantiate(key)
        except ResolutionError:
            raise
        except Exception as error:
            raise self._explain(key, error) from error
        raise ResolutionError(f"cannot resolve {describe(key)}: nothing is bound to it")

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call `function`, filling the parameters `args` and `kwargs` leave open.

        Parameters are filled in order. A parameter named in `kwargs` takes that
        value. A parameter whose annotation is bound takes the bound service,
        unless the next positional argument is already an instance of that
        annotation. Any other parameter takes the next positional argument, or
        its default.
        """
        signature = inspect.signature(function)
        hints = self._hints(function)
        remaining = list(args)
        call_args: list[Any] = []
        call_kwargs: dict[str, Any] = {}
        for parameter in signature.parameters.values():
            annotation = hints.get(parameter.name, _MISSING)
            if parameter.kind is parameter.VAR_POSITIONAL:
                call_args.extend(remaining)
                remaining.clear()
                continue
            if parameter.kind is parameter.VAR_KEYWORD:
                continue
            if parameter.name in kwargs:
                call_kwargs[parameter.name] = kwargs[parameter.name]
                continue
            given = bool(remaining) and parameter.kind is not parameter.KEYWORD_ONLY
            if self._is_resolvable(annotation) and not (
                given and _is_instance(remaining[0], annotation)
            ):
                value = self.make(annotation)
            elif given:
                value = remaining.pop(0)
            elif parameter.default is not _MISSING:
                continue
            else:
                raise ResolutionError(
                    f"cannot call {describe(function)}: parameter "
                    f"{_parameter_text(parameter, annotation)} has "
                    + ("no binding" if annotation is not _MISSING else "no value")
                )
            if parameter.kind is parameter.KEYWORD_ONLY:
                call_kwargs[parameter.name] = value
            elif call_kwargs:
                # A keyword came first: keep passing by name so the order holds.
                call_kwargs[parameter.name] = value
            else:
                call_args.append(value)
        extra_kwargs = {k: v for k, v in kwargs.items() if k not in signature.parameters}
        if remaining or (extra_kwargs and not _takes_var_keyword(signature)):
            count = len(remaining) or len(extra_kwargs)
            raise TypeError(
                f"{describe(function)}() was given {count} argument(s) it has no parameter for"
            )
        call_kwargs.update(extra_kwargs)
        return function(*call_args, **call_kwargs)

    @contextmanager
    def swap(self, key: Any, replacement: Any) -> Iterator[Any]:
        """Resolve `key` to `replacement` inside the block, and to the original after.

        A class `replacement` is built on each resolution; anything else is used
        as it is. Bindings made inside the block belong to it and are dropped
        when it ends, whether it ends normally or with an exception.
        """
        original_registry, original_bindings = self._registry, self._bindings
        self._registry = original_registry.child()
        self._bindings = [*original_bindings, {}]
        try:
            if isinstance(replacement, type):
                self.bind(key, replacement)
            else:
                self.instance(key, replacement)
            yield replacement
        finally:
            self._registry, self._bindings = original_registry, original_bindings

    # Helpers ----------------------------------------------------------------------

    def _is_resolvable(self, annotation: Any) -> bool:
        return annotation is not _MISSING and self.has(annotation)

    @staticmethod
    def _hints(function: Callable[..., Any]) -> dict[str, Any]:
        target = function.__init__ if isinstance(function, type) else function
        try:
            return get_type_hints(target)
        except Exception:
            # One annotation that cannot be evaluated must not hide the others.
            namespace = getattr(inspect.unwrap(target), "__globals__", {})
            hints: dict[str, Any] = {}
            for name, parameter in inspect.signature(target).parameters.items():
                annotation = parameter.annotation
                if isinstance(annotation, str):
                    try:
                        annotation = eval(annotation, namespace)
                    except Exception:
                        continue
                if annotation is not _MISSING:
                    hints[name] = annotation
            return hints

    def _explain(self, key: Any, error: Exception) -> ResolutionError:
        """Turn a failure inside punq into a message naming what is missing."""
        target = self._concrete_for(key)
        problem = self._first_missing(target, seen=set()) if target is not None else None
        if problem is not None:
            return ResolutionError(problem)
        return ResolutionError(f"cannot build {describe(key)}: {type(error).__name__}: {error}")

    def _concrete_for(self, key: Any) -> Any | None:
        for layer in reversed(self._bindings):
            if key in layer:
                return layer[key]
        return key if isinstance(key, type) else None

    def _first_missing(self, target: Any, seen: set[Any]) -> str | None:
        """Walk `target`'s constructor and name the first parameter nothing can fill."""
        if target in seen or not callable(target):
            return None
        seen.add(target)
        constructor = target.__init__ if isinstance(target, type) else target
        try:
            signature = inspect.signature(constructor)
        except (TypeError, ValueError):
            return None
        try:
            hints = get_type_hints(constructor)
        except NameError as error:
            return f"cannot build {describe(target)}: annotation not found ({error})"
        for index, parameter in enumerate(signature.parameters.values()):
            if index == 0 and isinstance(target, type):
                continue  # self
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            annotation = hints.get(parameter.name, _MISSING)
            bound = annotation is not _MISSING and self.has(annotation)
            if not bound and parameter.default is _MISSING:
                reason = (
                    "has no binding"
                    if annotation is not _MISSING
                    else "has no type annotation and no default"
                )
                return (
                    f"cannot build {describe(target)}: parameter "
                    f"{_parameter_text(parameter, annotation)} {reason}"
                )
            if bound:
                deeper = self._first_missing(self._concrete_for(annotation), seen)
                if deeper is not None:
                    return deeper
        return None


def _is_instance(value: Any, annotation: Any) -> bool:
    try:
        return isinstance(value, annotation)
    except TypeError:
        return False


def _takes_var_keyword(signature: inspect.Signature) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
