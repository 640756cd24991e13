"""In-memory cache of opened readers, so a file key is unwrapped once per version.

A ContentReader holds the unwrapped file key. It lives only here, in memory: nothing in this
module ever touches the disk.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")


class MemoryLRU(Generic[T]):
    """A small least-recently-used map with a bound on the number of entries."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[object, T] = OrderedDict()

    def get(self, key: object) -> T | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: object, item: T) -> None:
        self._items[key] = item
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def pop(self, key: object) -> T | None:
        return self._items.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._items  # (not a use: the order stays)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class ByteBoundLRU:
    """Byte strings by key, evicted least recently used first beyond ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[object, bytes] = OrderedDict()
        self._total = 0

    def get(self, key: object) -> bytes | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: object, data: bytes) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._total -= len(old)
        if len(data) > self.max_bytes:
            return
        self._items[key] = data
        self._total += len(data)
        while self._total > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self._total -= len(dropped)

    def discard(self, key: object) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._total -= len(old)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def clear(self) -> None:
        self._items.clear()
        self._total = 0
