"""Bounded in-memory maps: the plugin never keeps per-room or per-user state without a limit."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

# A read refreshes an entry's last use (and its place in the eviction order) only once it is older
# than this part of the idle time: the hot path reads the same few entries again and again.
REFRESH_PARTS = 64


class IdleCache(Generic[K, V]):
    """A map that forgets entries unused for ``idle_seconds`` (on ``sweep()``) and never holds
    more than ``max_size`` (least recently used first out, to within ``idle_seconds /
    REFRESH_PARTS``). Not thread-safe: one owner thread."""

    def __init__(self, max_size: int, idle_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_size = max(1, max_size)
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._entries: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[K]:
        return iter(self._entries)

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self.clock()
        if now - entry[1] > self.idle_seconds / REFRESH_PARTS:  # else used recently enough: as good as now
            self._entries[key] = (entry[0], now)
            self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: K, value: V) -> None:
        self._entries[key] = (value, self.clock())
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def pop(self, key: K) -> V | None:
        entry = self._entries.pop(key, None)
        return None if entry is None else entry[0]

    def clear(self) -> None:
        self._entries.clear()

    def sweep(self) -> int:
        """Drop entries idle for longer than ``idle_seconds``; returns how many."""
        cutoff = self.clock() - self.idle_seconds
        dropped = 0
        while self._entries:
            key, (_, used) = next(iter(self._entries.items()))
            if used > cutoff:
                break
            del self._entries[key]
            dropped += 1
        return dropped
