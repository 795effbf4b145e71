"""What the container reads from a definition: its parameters and their annotations.

A class's constructor or a function is read once and the result kept, since
a worker builds and calls the same few job classes over and over. Annotations
are evaluated one by one, so an annotation that cannot be evaluated (a name
imported only for type checkers) leaves the other parameters usable.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FunctionType, MethodType
from typing import Any, get_type_hints

from container.bindings import describe
from container.caches import WeakCache

MISSING: Any = inspect.Parameter.empty
POSITIONAL_ONLY = inspect.Parameter.POSITIONAL_ONLY
POSITIONAL_OR_KEYWORD = inspect.Parameter.POSITIONAL_OR_KEYWORD
VAR_POSITIONAL = inspect.Parameter.VAR_POSITIONAL
KEYWORD_ONLY = inspect.Parameter.KEYWORD_ONLY
VAR_KEYWORD = inspect.Parameter.VAR_KEYWORD


@dataclass(frozen=True, slots=True)
class Unresolved:
    """An annotation that could not be evaluated; `reason` says why."""

    text: str
    reason: str


@dataclass(frozen=True, slots=True)
class Parameter:
    """One parameter of a constructor or function, its annotation evaluated."""

    name: str
    kind: Any
    annotation: Any
    has_default: bool

    @property
    def text(self) -> str:
        """The parameter as error messages show it: ``'host: str'`` or ``'host'``."""
        if self.annotation is MISSING:
            return f"'{self.name}'"
        if isinstance(self.annotation, Unresolved):
            return f"'{self.name}: {self.annotation.text}'"
        if isinstance(self.annotation, type):
            return f"'{self.name}: {describe(self.annotation)}'"
        return f"'{self.name}: {self.annotation}'"


class Unreadable(Exception):
    """A callable whose signature Python cannot tell (some classes written in C)."""


def read_parameters(
    target: Callable[..., Any], names: Mapping[str, Any] | None = None
) -> tuple[Parameter, ...]:
    """Return the parameters of `target`, or of its constructor when it is a class.

    `names` are extra names annotations may use (the registered classes),
    beside the definition module's own. A class's `self` is left out.
    """
    is_class = isinstance(target, type)
    function: Any = target.__init__ if is_class else target
    if is_class and function is object.__init__:
        return ()
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError) as error:
        raise Unreadable(str(error)) from error
    hints = _hints(function, names)
    parameters = list(signature.parameters.values())
    if is_class and parameters and parameters[0].kind in (POSITIONAL_ONLY, POSITIONAL_OR_KEYWORD):
        parameters = parameters[1:]  # self
    return tuple(
        Parameter(
            name=parameter.name,
            kind=parameter.kind,
            annotation=hints.get(parameter.name, MISSING),
            has_default=parameter.default is not MISSING,
        )
        for parameter in parameters
    )


def _hints(function: Any, names: Mapping[str, Any] | None) -> dict[str, Any]:
    try:
        return get_type_hints(function, None, names)
    except Exception:
        pass
    # One annotation that cannot be evaluated must not hide the others.
    namespace = getattr(inspect.unwrap(function), "__globals__", {})
    hints: dict[str, Any] = {}
    for name, parameter in inspect.signature(function).parameters.items():
        annotation = parameter.annotation
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace, names)
            except Exception as error:
                annotation = Unresolved(annotation, f"annotation not found: {error}")
        if annotation is not MISSING:
            hints[name] = annotation
    return hints


def autowiring_refusal(key: Any) -> str | None:
    """Say why `key` cannot be built without a binding, or None when it can.

    Only concrete classes written for the application are built unbound:
    abstract classes, Protocols, enumerations and builtins need a binding.
    """
    if not isinstance(key, type):
        return "it is not a class"
    if key.__module__ == "builtins":
        return "builtins are never built without a binding"
    if getattr(key, "_is_protocol", False):
        return "it is a Protocol"
    if inspect.isabstract(key):
        return "it is abstract"
    if issubclass(key, enum.Enum):
        return "it is an enumeration"
    return None


@dataclass(slots=True)
class CallPlan:
    """What `Container.call` needs of a callable's definition, worked out once.

    `steps` caches, for one container version, which parameters the container
    fills; it is replaced whenever the version it was worked out for is not
    the current one.
    """

    parameters: tuple[Parameter, ...]
    names: frozenset[str]
    takes_var_keyword: bool
    # (version, steps): see `container.calls`.
    steps: tuple[int, Any] = (0, None)


# Weak keys, so that functions and classes cloudpickle recreates for a job are
# not kept alive by their plans. Bound methods are new objects on every
# attribute lookup: theirs are kept under the function they bind, apart from
# that function's own plan, which still has its first parameter.
_function_plans = WeakCache()
method_plans = WeakCache()


def call_plan(function: Callable[..., Any]) -> CallPlan:
    """Return the plan of `function`, from the cache when its definition has one."""
    if type(function) is MethodType:
        plans, key = method_plans, function.__func__
    elif isinstance(function, FunctionType | type):
        plans, key = _function_plans, function
    else:
        # A partial or a callable object has a signature of its own, and is
        # usually unpickled anew for each job: nothing to gain from keeping it.
        return _plan_call(function)
    plan = plans.get(key)
    if plan is None:
        plan = _plan_call(function)
        plans.set(key, plan)
    return plan


def _plan_call(function: Callable[..., Any]) -> CallPlan:
    if isinstance(function, type):
        parameters = read_parameters(function)
    else:
        signature = inspect.signature(function)
        hints = _hints(function, None)
        parameters = tuple(
            Parameter(p.name, p.kind, hints.get(p.name, MISSING), p.default is not MISSING)
            for p in signature.parameters.values()
        )
    return CallPlan(
        parameters=parameters,
        names=frozenset(p.name for p in parameters),
        takes_var_keyword=any(p.kind is VAR_KEYWORD for p in parameters),
    )
