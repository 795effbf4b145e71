"""The service container: bindings, and resolution of constructors and callables.

Registrations live in a `punq` container; this module adds what an application
needs on top of it: string keys next to class keys, building classes that were
never bound, calling functions with their annotated parameters filled in, a
`swap` for tests, and one error type that says exactly what could not be built.

A worker builds and calls a job this way for every job it runs, so what follows
from a callable's definition alone (its signature, its type hints, which
constructor parameters need a service) is worked out once per function or class
and kept. Bindings are never kept: each `make` and `call` resolves them afresh.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FunctionType, MethodType
from typing import Any, TypeVar, get_type_hints
from weakref import WeakKeyDictionary

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
        # Constructor plans of unbound classes. Their hints are evaluated
        # against the names registered in the current punq registry, as punq
        # does, so the plans belong to that registry and are dropped whenever
        # it gains a binding.
        self._constructors: WeakKeyDictionary[type, _ConstructorPlan] = WeakKeyDictionary()
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
        self._constructors.clear()
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
        self._constructors.clear()
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
                return self._build(key)
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
        plan = _call_plan(function)
        remaining = list(args)
        call_args: list[Any] = []
        call_kwargs: dict[str, Any] = {}
        for parameter, annotation in plan.parameters:
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
        extra_kwargs = {k: v for k, v in kwargs.items() if k not in plan.names}
        if remaining or (extra_kwargs and not plan.takes_var_keyword):
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
        original_constructors = self._constructors
        self._registry = original_registry.child()
        self._bindings = [*original_bindings, {}]
        # The child registry evaluates hints against its own names: new plans.
        self._constructors = WeakKeyDictionary()
        try:
            if isinstance(replacement, type):
                self.bind(key, replacement)
            else:
                self.instance(key, replacement)
            yield replacement
        finally:
            self._registry, self._bindings = original_registry, original_bindings
            self._constructors = original_constructors

    # Helpers ----------------------------------------------------------------------

    def _build(self, cls: type[T]) -> T:
        """Build the unbound class `cls` as punq's `instantiate` does, from a kept plan.

        `instantiate` inspects the constructor on every call; this is the same
        work split in two: the plan is worked out once, the services are
        resolved through punq on every build (so swaps, later bindings and
        singletons behave as before), sharing one resolution context as punq
        does, so a transient service two parts of the graph need is built once.
        """
        if cls.__init__ is object.__init__:
            return cls()
        plan = self._constructor_plan(cls)
        registry = self._registry
        context = registry.registrations.build_context(cls)
        arguments = dict(plan.defaults)
        for name, annotation in plan.needs:
            default = arguments.get(name, punq.empty)
            arguments[name] = registry._resolve_impl(annotation, {}, context, default)
        return cls(**arguments)

    def _constructor_plan(self, cls: type) -> _ConstructorPlan:
        plan = self._constructors.get(cls)
        if plan is None:
            # The same two steps as punq's `instantiate` (punq is pinned below
            # 0.10): hints against the registered names, then the defaults.
            needs = self._registry.registrations._get_needs_for_ctor(cls)
            plan = _ConstructorPlan(
                needs=tuple((name, hint) for name, hint in needs.items() if name != "return"),
                defaults=punq._match_defaults(inspect.getfullargspec(cls)),
            )
            self._constructors[cls] = plan
        return plan

    def _is_resolvable(self, annotation: Any) -> bool:
        return annotation is not _MISSING and self.has(annotation)

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


@dataclass(frozen=True, slots=True)
class _ConstructorPlan:
    """How to build an unbound class: the parameters needing a service, and the defaults."""

    needs: tuple[tuple[str, Any], ...]
    defaults: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _CallPlan:
    """What `Container.call` needs of a callable's definition, worked out once."""

    # Every parameter, in order, with its evaluated annotation (or `_MISSING`).
    parameters: tuple[tuple[inspect.Parameter, Any], ...]
    names: frozenset[str]
    takes_var_keyword: bool


# Weak keys, so that functions and classes cloudpickle recreates for a job are
# not kept alive by their plans. Bound methods are new objects on every
# attribute lookup: theirs are kept under the function they bind, apart from
# that function's own plan, which still has its first parameter.
_function_plans: WeakKeyDictionary[Any, _CallPlan] = WeakKeyDictionary()
_method_plans: WeakKeyDictionary[Any, _CallPlan] = WeakKeyDictionary()


def _call_plan(function: Callable[..., Any]) -> _CallPlan:
    """Return the plan of `function`, from the cache when its definition has one."""
    if isinstance(function, MethodType):
        plans, key = _method_plans, function.__func__
    elif isinstance(function, FunctionType | type):
        plans, key = _function_plans, function
    else:
        # A partial or a callable object has a signature of its own, and is
        # usually unpickled anew for each job: nothing to gain from keeping it.
        return _plan_call(function)
    try:
        return plans[key]
    except KeyError:
        plan = plans[key] = _plan_call(function)
        return plan
    except TypeError:
        # What a bound method binds may not take weak references.
        return _plan_call(function)


def _plan_call(function: Callable[..., Any]) -> _CallPlan:
    signature = inspect.signature(function)
    hints = _hints(function)
    parameters = tuple(
        (parameter, hints.get(parameter.name, _MISSING))
        for parameter in signature.parameters.values()
    )
    return _CallPlan(
        parameters=parameters,
        names=frozenset(signature.parameters),
        takes_var_keyword=any(p.kind is p.VAR_KEYWORD for p, _ in parameters),
    )


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
