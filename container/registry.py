"""Where registrations live, and the caches that depend on them.

Registrations are recorded in a `punq` registry, which keeps the names of
registered classes that annotations may use (a class imported only for type
checkers is found once it is bound), and beside it as `Binding`s, which say
how long each object lives. Every change of registrations takes a new
`version` from one counter shared by all containers, and drops what was
worked out from the old registrations: compiled recipes, read constructors
and the functions `call` may call as they are. A version number therefore
names one container's registrations at one moment, which is what
per-definition caches check.

The recipe cache holds its keys strongly, for speed, so it is bounded: past
`CACHE_LIMIT` keys (job classes cloudpickle recreates for every job, say)
it starts again empty and recompiles what is asked for next.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import ChainMap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

import punq

from container.bindings import Binding
from container.signatures import Parameter, read_parameters

_versions = itertools.count(1)
CACHE_LIMIT = 2048


@dataclass(frozen=True)
class _Name:
    """A string key as punq sees it: punq would parse a bare string as Python code."""

    text: str


class Registry:
    """The bindings of one container, in layers (one per open `swap`), and their caches."""

    def __init__(self) -> None:
        self._punq: list[punq.Container] = [punq.Container()]
        self._layers: list[dict[Any, Binding]] = [{}]
        self.version = next(_versions)
        self.recipes: dict[Any, Any] = {}
        # Plain functions (a bound method's `__func__`) -> the counts of
        # positional arguments `call` passes to them as they are.
        self.direct_calls: dict[Any, tuple[int, int]] = {}
        self._parameters: WeakKeyDictionary[Any, tuple[Parameter, ...]] = WeakKeyDictionary()

    def add(self, binding: Binding) -> None:
        """Record `binding`, replacing what its key was bound to before."""
        key: Any = binding.key
        factory, registry = binding.factory, self._punq[-1]
        punq_key = _Name(key) if isinstance(key, str) else key
        # punq records the name and checks the annotations can be read; how
        # long objects live is ours to decide, so it sees every factory as transient.
        if factory is None:
            registry.register(punq_key, instance=binding.value)
        elif factory is key:
            registry.register(binding.key)
        else:
            registry.register(punq_key, factory)
        if isinstance(key, str):
            # Lets an annotation written as the string key ("mailer") name it.
            registry.registrations._localns[key] = key
        self._layers[-1][key] = binding
        self.changed()

    def lookup(self, key: Any) -> Binding | None:
        """Return what `key` is bound to, or None."""
        try:
            for layer in reversed(self._layers):
                binding = layer.get(key)
                if binding is not None:
                    return binding
        except TypeError:  # an unhashable annotation is never a key
            pass
        return None

    def parameters(self, target: Callable[..., Any]) -> tuple[Parameter, ...]:
        """The parameters of `target` (a factory, or a class's constructor).

        Annotations are evaluated against the registered names too, so the
        result is kept only until the registrations change.
        """
        try:
            return self._parameters[target]
        except (KeyError, TypeError):
            pass
        names = ChainMap(*(r.registrations._localns for r in reversed(self._punq)))
        parameters = read_parameters(target, names)
        with contextlib.suppress(TypeError):  # no weak reference: read again next time
            self._parameters[target] = parameters
        return parameters

    def cached(self, key: Any) -> Any | None:
        """The recipe kept for `key`, or None."""
        try:
            return self.recipes.get(key)
        except TypeError:  # unhashable
            return None

    def store(self, key: Any, recipe: Any, version: int) -> None:
        """Keep `recipe` for `key` if the registrations are still those it was made from."""
        if version == self.version:
            _bounded(self.recipes)[key] = recipe

    def store_direct_call(self, function: Any, counts: tuple[int, int], version: int) -> None:
        """Note that `call` may pass `counts` positional arguments to `function` as they are."""
        if version == self.version:
            _bounded(self.direct_calls)[function] = counts

    def changed(self) -> None:
        """Start a new version: everything worked out from the old one is dropped."""
        self.version = next(_versions)
        # Cleared in place: `Container` reads these two dicts directly.
        self.recipes.clear()
        self.direct_calls.clear()
        self._parameters = WeakKeyDictionary()

    def open_layer(self) -> tuple[list[punq.Container], list[dict[Any, Binding]]]:
        """Start a layer whose bindings `close_layer` drops; returns what to restore."""
        saved = self._punq, self._layers
        self._punq = [*self._punq, self._punq[-1].child()]
        self._layers = [*self._layers, {}]
        self.changed()
        return saved

    def close_layer(self, saved: tuple[list[punq.Container], list[dict[Any, Binding]]]) -> None:
        """Go back to the layers `open_layer` saved."""
        self._punq, self._layers = saved
        self.changed()


def _bounded(cache: dict[Any, Any]) -> dict[Any, Any]:
    if len(cache) >= CACHE_LIMIT:
        cache.clear()
    return cache
