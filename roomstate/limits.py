"""Concurrency limits that follow the configuration while the plugin runs."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from types import TracebackType


class Limiter:
    """At most ``limit()`` holders at a time. ``limit`` is read whenever a holder may enter, so a
    new configured value applies at once (``changed()`` wakes the waiters to re-check)."""

    def __init__(self, limit: Callable[[], int]) -> None:
        self.limit = limit
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def __aenter__(self) -> None:
        while self.active >= max(1, self.limit()):
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                else:
                    self._wake(1)  # we were woken but leave: pass the turn on
                raise
        self.active += 1

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.active -= 1
        self._wake(1)

    def changed(self) -> None:
        self._wake(len(self._waiters))

    def _wake(self, count: int) -> None:
        while count > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                count -= 1
