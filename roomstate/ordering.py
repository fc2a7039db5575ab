"""Per-room order: each room's work runs in the order it was scheduled, i.e. the order in which
the homeserver delivered the events (never the senders' clocks).

mautrix's syncer creates one task per event and handler, in delivery order (per room: the sync's
``state`` section, then its ``timeline``), and a task runs synchronously until its first
``await``. Handlers schedule their work here *before* their first ``await``, so the position of
every event in its room's line is fixed by delivery order.

Two kinds of work:

- ``submit``: work that only queues a database job (the store's write methods do that
  synchronously). It is started as soon as everything scheduled before it in the room has been
  started; the writer thread runs jobs first-in first-out, so their effects keep the order, and a
  burst of events is group-committed instead of waiting for one commit after another.
- ``run``: work that awaits something else first (a full sync fetches the room's state). Later
  work in the room waits until it has finished.

Nothing is kept for a room with no pending work, so memory does not grow with the rooms seen.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from mautrix.types import RoomID

T = TypeVar("T")
log = logging.getLogger("roomstate.ordering")


def _copy_outcome(source: asyncio.Future[Any], target: asyncio.Future[Any]) -> None:
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())  # type: ignore[arg-type]
    else:
        target.set_result(source.result())


class _Line:
    """A room's pending work behind a ``run`` step still in progress."""

    def __init__(self) -> None:
        self.items: deque[tuple[bool, Callable[[], Awaitable[Any]], asyncio.Future[Any]]] = deque()
        self.drainer: asyncio.Task[None] | None = None
        self.current: asyncio.Future[Any] | None = None  # the step in progress


class RoomQueue:
    def __init__(self) -> None:
        self._lines: dict[RoomID, _Line] = {}

    def __len__(self) -> int:
        """Rooms with a ``run`` step pending (work started with ``submit`` is the store's)."""
        return len(self._lines)

    def submit(self, room_id: RoomID, start: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        """Schedule work that queues its database job when ``start()`` is called: at once if
        nothing in the room is waiting for a ``run`` step, else right after it."""
        line = self._lines.get(room_id)
        if line is None:
            return self._start(start)
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        line.items.append((False, start, future))
        return future

    def run(self, room_id: RoomID, step: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        """Schedule work that later work in the room must wait for."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        line = self._lines.get(room_id)
        if line is None:
            line = self._lines[room_id] = _Line()
            line.drainer = asyncio.create_task(self._drain(room_id, line), name=f"roomstate-line-{room_id}")
        line.items.append((True, step, future))
        return future

    def barrier(self, room_id: RoomID) -> Awaitable[Any]:
        """An awaitable that completes when the room's ``run`` steps scheduled *up to now*, and
        the work queued behind them, have finished (failed or not). Work started with ``submit``
        before is the store's to order (``RoomStore.flush``). Call it synchronously where the
        position matters."""
        line = self._lines.get(room_id)
        if line is None or (not line.items and line.drainer is None):
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        last = line.items[-1][2] if line.items else line.current
        return asyncio.wait({last}) if last is not None else asyncio.sleep(0)

    async def close(self, timeout: float) -> None:
        """Let pending work finish for up to ``timeout`` seconds, then cancel what is left."""
        drainers = [line.drainer for line in self._lines.values() if line.drainer is not None]
        if drainers:
            _, late = await asyncio.wait(drainers, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                log.warning("Cancelled the work of %d rooms at shutdown", len(late))
                await asyncio.wait(late)

    # ---- internals --------------------------------------------------------------------------

    @staticmethod
    def _start(start: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        try:
            started = start()
            return started if isinstance(started, asyncio.Future) else asyncio.ensure_future(started)
        except Exception as error:
            failed: asyncio.Future[T] = asyncio.get_running_loop().create_future()
            failed.set_exception(error)
            return failed

    async def _drain(self, room_id: RoomID, line: _Line) -> None:
        try:
            while line.items:
                blocking, work, future = line.items.popleft()
                line.current = future
                if not blocking:
                    self._start(work).add_done_callback(functools.partial(_copy_outcome, target=future))
                    continue
                try:
                    result = await work()
                except asyncio.CancelledError:
                    if not future.done():
                        future.cancel()
                    raise
                except Exception as error:
                    if not future.done():
                        future.set_exception(error)
                else:
                    if not future.done():
                        future.set_result(result)
        finally:
            for _, _, future in line.items:  # only left over when cancelled
                future.cancel()
            if self._lines.get(room_id) is line:
                del self._lines[room_id]
