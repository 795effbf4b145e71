"""`Container.call`: filling the parameters of a function its caller left open.

Which parameters the container fills depends on the function's definition
and on the registrations, so it is worked out once per function and version
(`CallSteps`) and kept on the function's plan. A function the container
fills nothing of, called with arguments that fit, is called straight away.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from types import MethodType
from typing import Any

from container.bindings import describe
from container.errors import ResolutionError
from container.recipes import Compiler, NoScopeOpen, Recipe, scope_error
from container.registry import Registry
from container.signatures import (
    KEYWORD_ONLY,
    MISSING,
    POSITIONAL_ONLY,
    POSITIONAL_OR_KEYWORD,
    VAR_KEYWORD,
    VAR_POSITIONAL,
    CallPlan,
    Parameter,
    Unresolved,
    autowiring_refusal,
    call_plan,
)

_NEVER = 1 << 62


@dataclass(eq=False, slots=True)
class Step:
    """One parameter, and whether the container fills it when the caller does not."""

    parameter: Parameter
    # The annotation is bound: its service is used unless the caller gives one.
    bound: bool
    # The annotation is an unbound concrete class: built when nothing else fills it.
    autowired: bool
    # The compiled service, when it compiled; compiled again (and so raising) when not.
    recipe: Recipe | None


@dataclass(eq=False, slots=True)
class CallSteps:
    """Every parameter's step, and the positional counts that need no container at all."""

    steps: tuple[Step, ...]
    direct_from: int
    direct_to: int


def steps_for(registry: Registry, compiler: Compiler, function: Callable[..., Any]) -> CallSteps:
    """Work out the steps of `function` against the current registrations."""
    plan = call_plan(function)
    version = registry.version
    steps: list[Step] = []
    for parameter in plan.parameters:
        annotation = parameter.annotation
        usable = annotation is not MISSING and not isinstance(annotation, Unresolved)
        bound = usable and registry.lookup(annotation) is not None
        autowired = usable and not bound and autowiring_refusal(annotation) is None
        recipe = None
        if bound or autowired:
            # A service that cannot be built fails only if the parameter needs it.
            with contextlib.suppress(ResolutionError):
                recipe = compiler.for_call(function, annotation)
        steps.append(Step(parameter, bound, autowired, recipe))
    calls = CallSteps(tuple(steps), *_direct_range(plan))
    if any(step.bound for step in steps):
        calls.direct_from = _NEVER
    plan.steps = (version, calls)
    if type(function) is MethodType and calls.direct_from <= calls.direct_to:
        registry.store_direct_call(function.__func__, (calls.direct_from, calls.direct_to), version)
    return calls


def _direct_range(plan: CallPlan) -> tuple[int, int]:
    """The counts of positional arguments the function can take as they are."""
    positional = [p for p in plan.parameters if p.kind in (POSITIONAL_ONLY, POSITIONAL_OR_KEYWORD)]
    if any(p.kind is KEYWORD_ONLY and not p.has_default for p in plan.parameters):
        return _NEVER, 0
    required = max((i + 1 for i, p in enumerate(positional) if not p.has_default), default=0)
    takes_rest = any(p.kind is VAR_POSITIONAL for p in plan.parameters)
    return required, _NEVER if takes_rest else len(positional)


def call(
    registry: Registry,
    compiler: Compiler,
    function: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Call `function` as `Container.call` describes."""
    plan = call_plan(function)
    version, calls = plan.steps
    if version != registry.version:
        calls = steps_for(registry, compiler, function)
    if not kwargs and calls.direct_from <= len(args) <= calls.direct_to:
        return function(*args)
    try:
        call_args, call_kwargs = _arguments(compiler, function, calls, args, kwargs)
    except NoScopeOpen as missing:
        needs = [step.recipe for step in calls.steps if step.recipe is not None]
        raise scope_error(describe(function), "call", needs, missing.binding) from None
    extra = {name: value for name, value in kwargs.items() if name not in plan.names}
    if extra and not plan.takes_var_keyword:
        raise TypeError(
            f"{describe(function)}() was given {len(extra)} argument(s) it has no parameter for"
        )
    call_kwargs.update(extra)
    return function(*call_args, **call_kwargs)


def _arguments(
    compiler: Compiler,
    function: Callable[..., Any],
    calls: CallSteps,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[list[Any], dict[str, Any]]:
    """Fill the parameters in order, as `Container.call` describes."""
    index, count = 0, len(args)
    call_args: list[Any] = []
    call_kwargs: dict[str, Any] = {}
    by_name = False  # once a parameter is passed by name, later ones are too
    for step in calls.steps:
        parameter = step.parameter
        kind = parameter.kind
        if kind is VAR_POSITIONAL:
            call_args.extend(args[index:])
            index = count
            continue
        if kind is VAR_KEYWORD:
            continue
        if parameter.name in kwargs:
            call_kwargs[parameter.name] = kwargs[parameter.name]
            by_name = True
            continue
        given = index < count and kind is not KEYWORD_ONLY
        if step.bound and not (given and _is_instance(args[index], parameter.annotation)):
            value = _service(compiler, function, step)
        elif given:
            value = args[index]
            index += 1
        elif parameter.has_default:
            by_name = True
            continue
        elif step.autowired:
            value = _service(compiler, function, step)
        else:
            reason = "no value" if parameter.annotation is MISSING else "no binding"
            raise ResolutionError(
                f"cannot call {describe(function)}: parameter {parameter.text} has {reason}"
            )
        if by_name or kind is KEYWORD_ONLY:
            call_kwargs[parameter.name] = value
        else:
            call_args.append(value)
    if index < count:
        raise TypeError(
            f"{describe(function)}() was given {count - index} argument(s) it has no parameter for"
        )
    return call_args, call_kwargs


def _service(compiler: Compiler, function: Callable[..., Any], step: Step) -> Any:
    recipe = step.recipe or compiler.for_call(function, step.parameter.annotation)
    return recipe.build()


def _is_instance(value: Any, annotation: Any) -> bool:
    try:
        return isinstance(value, annotation)
    except TypeError:
        return False
