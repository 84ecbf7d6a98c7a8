"""A small least-recently-used map: per-URI worker state that must not grow with every parker."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LruMap(Generic[K, V]):
    """At most ``limit`` entries; using one makes it the newest, adding one past the limit
    evicts the least recently used (``on_evict`` gets it, e.g. to delete a pjsua Buddy)."""

    def __init__(self, limit: int, on_evict: Callable[[K, V], None] | None = None) -> None:
        self.limit = limit
        self.on_evict = on_evict
        self.entries: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def get_or_create(self, key: K, create: Callable[[], V]) -> V:
        """The entry of ``key`` (now the most recently used), created when missing."""
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key]
        value = self.entries[key] = create()
        while len(self.entries) > self.limit:
            old_key, old = self.entries.popitem(last=False)
            if self.on_evict is not None:
                self.on_evict(old_key, old)
        return value

    def clear(self) -> None:
        self.entries.clear()
