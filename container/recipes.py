"""Compiling a key into a recipe: a ready function that makes its object.

The first `make` of a key reads the constructors it needs, follows their
annotations through the bindings to any depth, checks the whole graph
(missing bindings, cycles, a singleton that would keep a scoped object) and
leaves one small function per node. Later `make`s of the key only run those
functions, until the registrations change and the recipes are compiled anew.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from container.bindings import _UNSET, Binding, Lifetime, describe
from container.errors import ResolutionError, ScopeError, chain_error
from container.registry import Registry
from container.scope import Scope
from container.signatures import (
    KEYWORD_ONLY,
    MISSING,
    VAR_KEYWORD,
    VAR_POSITIONAL,
    Parameter,
    Unreadable,
    Unresolved,
    autowiring_refusal,
)

Builder = Callable[[], Any]


@dataclass(eq=False, slots=True)
class Recipe:
    """How to make the object of one node of the graph, and what it needs."""

    build: Builder
    label: str
    needs: tuple[Recipe, ...]
    binding: Binding | None
    # True when this node or anything below it is scoped: it needs an open scope.
    scoped: bool


@dataclass(eq=False, slots=True)
class _Arguments:
    """The builders of the arguments of a class or factory, and the recipes they come from."""

    positional: tuple[Builder, ...]
    keywords: tuple[tuple[str, Builder], ...]
    needs: tuple[Recipe, ...]
    scoped: bool


class NoScopeOpen(ScopeError):
    """Raised by a scoped recipe run outside any scope; `Container` names the chain."""

    def __init__(self, binding: Binding) -> None:
        super().__init__(f"cannot build {binding.label}: {_scope_needed(binding)}")
        self.binding = binding


def _scope_needed(binding: Binding) -> str:
    return (
        f"{binding.label} is scoped and no scope is open; "
        "resolve it inside `with container.scope():`"
    )


@dataclass(frozen=True, slots=True)
class _Compiling:
    """One compilation: how its errors begin, and the version its recipes belong to."""

    verb: str
    version: int


# The first link of the chain of a `call`: the function, which is no key.
_CALLER = object()
Chain = tuple[tuple[Any, str], ...]


class Compiler:
    """Turns keys into recipes against one `Registry`, reading its open scope from `current`."""

    def __init__(self, registry: Registry, current: ContextVar[Scope | None]) -> None:
        self._registry = registry
        self._current = current

    # Entry points ------------------------------------------------------------------

    def make(self, key: Any) -> Any:
        """Compile `key` (keeping the result) and make its object once."""
        return self.recipe(key, (), _Compiling("build", self._registry.version)).build()

    def for_call(self, function: Callable[..., Any], key: Any) -> Recipe:
        """The recipe filling a parameter of `function` annotated with `key`."""
        compiling = _Compiling("call", self._registry.version)
        return self.recipe(key, ((_CALLER, describe(function)),), compiling)

    def recipe(self, key: Any, chain: Chain, compiling: _Compiling) -> Recipe:
        """The recipe of `key`, reached through `chain`."""
        cached = self._registry.cached(key)
        if cached is not None:
            return cached
        binding = self._registry.lookup(key)
        label = binding.label if binding is not None else describe(key)
        if any(seen is key or seen == key for seen, _ in chain):
            raise chain_error(
                compiling.verb,
                [*_labels(chain), label],
                "the dependencies form a cycle",
            )
        chain = (*chain, (key, label))
        if binding is not None:
            recipe = self._bound(binding, chain, compiling)
            self._registry.store(key, recipe, compiling.version)
            return recipe
        refusal = autowiring_refusal(key)
        if refusal is not None:
            if len(chain) == 1:
                raise ResolutionError(
                    f"cannot resolve {label}: nothing is bound to it"
                    + (f" ({refusal})" if isinstance(key, type) else "")
                )
            raise chain_error(compiling.verb, _labels(chain), f"nothing is bound to it ({refusal})")
        arguments = self._arguments(key, chain, compiling)
        recipe = Recipe(
            _builder(key, arguments.positional, arguments.keywords),
            label,
            arguments.needs,
            None,
            arguments.scoped,
        )
        self._registry.store(key, recipe, compiling.version)
        return recipe

    # Nodes -------------------------------------------------------------------------

    def _bound(self, binding: Binding, chain: Chain, compiling: _Compiling) -> Recipe:
        if binding.lifetime is Lifetime.INSTANCE:
            value = binding.value
            return Recipe(lambda: value, binding.label, (), binding, False)
        assert binding.factory is not None
        arguments = self._arguments(binding.factory, chain, compiling)
        make = _builder(binding.factory, arguments.positional, arguments.keywords)
        scoped = arguments.scoped
        if binding.lifetime is Lifetime.SINGLETON:
            if scoped:
                path = _path_to_scoped(arguments.needs)
                raise chain_error(
                    compiling.verb,
                    [*_labels(chain), *(node.label for node in path)],
                    f"the singleton {binding.label} would keep the scoped {path[-1].label} "
                    "after its scope ends; bind it with bind() or scoped() instead",
                )
            build = _singleton(binding, make)
        elif binding.lifetime is Lifetime.SCOPED:
            build, scoped = _scoped(binding, make, self._current), True
        else:
            build = make
        return Recipe(build, binding.label, arguments.needs, binding, scoped)

    def _arguments(
        self, target: Callable[..., Any], chain: Chain, compiling: _Compiling
    ) -> _Arguments:
        try:
            parameters = self._registry.parameters(target)
        except Unreadable as error:
            raise chain_error(
                compiling.verb, _labels(chain), f"its signature cannot be read ({error})"
            ) from None
        positional: list[Builder] = []
        keywords: list[tuple[str, Builder]] = []
        needs: list[Recipe] = []
        by_name = False  # once a default is left out, later arguments go by name
        for parameter in parameters:
            if parameter.kind is VAR_POSITIONAL or parameter.kind is VAR_KEYWORD:
                continue
            recipe = self._argument(parameter, chain, compiling)
            if recipe is None:
                by_name = True
                continue
            needs.append(recipe)
            if by_name or parameter.kind is KEYWORD_ONLY:
                keywords.append((parameter.name, recipe.build))
            else:
                positional.append(recipe.build)
        return _Arguments(
            tuple(positional), tuple(keywords), tuple(needs), any(need.scoped for need in needs)
        )

    def _argument(self, parameter: Parameter, chain: Chain, compiling: _Compiling) -> Recipe | None:
        """The recipe filling `parameter`, or None to leave it to its default."""
        annotation = parameter.annotation
        usable = annotation is not MISSING and not isinstance(annotation, Unresolved)
        if usable and self._registry.lookup(annotation) is not None:
            return self.recipe(annotation, chain, compiling)
        if parameter.has_default:
            return None
        if usable and autowiring_refusal(annotation) is None:
            return self.recipe(annotation, chain, compiling)
        raise chain_error(compiling.verb, _labels(chain), missing_parameter(parameter))


def missing_parameter(parameter: Parameter) -> str:
    """The problem part of the error for a parameter nothing can fill."""
    annotation = parameter.annotation
    if annotation is MISSING:
        detail = " (it has no type annotation and no default)"
    elif isinstance(annotation, Unresolved):
        detail = f" ({annotation.reason})"
    else:
        detail = ""
    return f"parameter {parameter.text} has no binding{detail}"


def scope_error(root: str, verb: str, needs: Sequence[Recipe], binding: Binding) -> ScopeError:
    """The error for a scoped `binding` met outside a scope, naming the chain from `root`."""
    path = _path_to_binding(needs, binding) or []
    labels = [root, *(node.label for node in path)]
    if labels[-1] != binding.label:
        labels.append(binding.label)
    return chain_error(verb, labels, _scope_needed(binding), ScopeError)  # type: ignore[return-value]


def _labels(chain: Chain) -> list[str]:
    return [label for _, label in chain]


def _path_to_scoped(needs: Sequence[Recipe]) -> list[Recipe]:
    for need in needs:
        if need.binding is not None and need.binding.lifetime is Lifetime.SCOPED:
            return [need]
        if need.scoped:
            return [need, *_path_to_scoped(need.needs)]
    return []


def _path_to_binding(needs: Sequence[Recipe], binding: Binding) -> list[Recipe] | None:
    for need in needs:
        if need.binding is binding:
            return [need]
        deeper = _path_to_binding(need.needs, binding)
        if deeper is not None:
            return [need, *deeper]
    return None


# Builders ----------------------------------------------------------------------------
# Closures for the common arities, so a build is one call per node and no loop.


def _builder(
    target: Callable[..., Any],
    positional: Sequence[Builder],
    keywords: Sequence[tuple[str, Builder]],
) -> Builder:
    if keywords:
        every = tuple(positional)
        named = tuple(keywords)
        return lambda: target(
            *[build() for build in every], **{name: build() for name, build in named}
        )
    if len(positional) == 0:
        return target
    if len(positional) == 1:
        (first,) = positional
        return lambda: target(first())
    if len(positional) == 2:
        first, second = positional
        return lambda: target(first(), second())
    if len(positional) == 3:
        first, second, third = positional
        return lambda: target(first(), second(), third())
    every = tuple(positional)
    return lambda: target(*[build() for build in every])


def _singleton(binding: Binding, make: Builder) -> Builder:
    def build() -> Any:
        made = binding.value
        if made is not _UNSET:
            return made
        with binding.lock:  # two threads asking at once still get one object
            if binding.value is _UNSET:
                binding.value = make()
            return binding.value

    return build


def _scoped(binding: Binding, make: Builder, current: ContextVar[Scope | None]) -> Builder:
    current_scope = current.get

    def build() -> Any:
        scope = current_scope()
        if scope is None:
            raise NoScopeOpen(binding)
        made = scope.objects.get(binding, _UNSET)
        if made is _UNSET:
            made = scope.objects[binding] = make()
        return made

    return build
