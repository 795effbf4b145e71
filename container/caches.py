"""A cache of values kept under objects (classes, functions) without keeping them alive.

Job classes and functions that cloudpickle recreates for each job would
otherwise pile up. It does what `weakref.WeakKeyDictionary` does; its `data`
is read directly on the hot path (``cache.data.get(ref(key))``), which saves
a Python-level call on every `make` and `call`.
"""

from __future__ import annotations

import contextlib
from typing import Any
from weakref import ref


class WeakCache:
    """Values under weakly referenced keys; an entry goes when its key is collected."""

    __slots__ = ("__weakref__", "data")

    def __init__(self) -> None:
        self.data: dict[ref[Any], Any] = {}

    def get(self, key: Any) -> Any | None:
        """The value kept under `key`, or None (also for a key that takes no weak reference)."""
        try:
            return self.data.get(ref(key))
        except TypeError:
            return None

    def set(self, key: Any, value: Any) -> None:
        """Keep `value` under `key`; does nothing for a key that takes no weak reference."""
        cache = ref(self)

        def forget(dead: ref[Any]) -> None:
            alive = cache()
            if alive is not None:
                alive.data.pop(dead, None)

        with contextlib.suppress(TypeError):  # takes no weak reference: not kept
            self.data[ref(key, forget)] = value
