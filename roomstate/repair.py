"""The repairer: works through the durable resync queue until every room is in sync again.

A room enters the queue when an event could not be applied, when a sync failed, when an event
arrived for a room the store does not track, and at startup. The repairer syncs due rooms, at
most ``sync.concurrency`` at a time; a failed attempt is rescheduled with exponential backoff
(``sync.retry_min_seconds`` doubling up to ``sync.retry_max_seconds``, with jitter). Entries leave
the queue in the same transaction as a successful sync.

When the queue itself cannot be read (the database is unavailable: disk full, I/O error, a
read-only file), the repairer retries on a short backoff of its own (``STORAGE_RETRY_*``), so it
heals within seconds of the storage coming back, whatever ``sync.retry_*`` say.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from mautrix.types import RoomID

from .aio import sleep_unless
from .config import Config
from .db import RoomStore

log = logging.getLogger("roomstate.repair")

MAX_SLEEP_SECONDS = 300.0
STORAGE_RETRY_MIN_SECONDS = 0.5
STORAGE_RETRY_MAX_SECONDS = 5.0


class SyncRoom(Protocol):
    def __call__(self, room_id: RoomID, reason: str, *, kind: str) -> Awaitable[Any]: ...


Spawn = Callable[[Awaitable[Any], str], "asyncio.Task[Any]"]


class Repairer:
    def __init__(self, store: RoomStore, config: Config, sync_room: SyncRoom, spawn: Spawn) -> None:
        self.store = store
        self.config = config
        self._sync_room = sync_room
        self._spawn = spawn
        self._wake = asyncio.Event()
        self._in_flight: dict[RoomID, asyncio.Task[Any]] = {}
        self._unsaved: dict[RoomID, str] = {}  # rooms whose queue entry could not be written
        self.storage_error: str | None = None  # why the queue cannot be read now, if it cannot

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``."""
        delay: float = min(self.config.retry_max_seconds, self.config.retry_min_seconds * 2 ** max(0, attempts - 1))
        return delay * random.uniform(0.9, 1.1)

    def wake(self) -> None:
        self._wake.set()

    def remember(self, room_id: RoomID, error: str) -> None:
        """A room that needs a resync, but whose queue entry could not be stored (the database
        failed too): kept in memory and written again on the next round."""
        self._unsaved[room_id] = error
        self.wake()

    def all_saved(self) -> bool:
        """Whether no room waits for a resync in memory only (its queue entry could not be written)."""
        return not self._unsaved

    def idle(self) -> bool:
        return not self._in_flight and not self._unsaved

    async def run(self) -> None:
        storage_delay = STORAGE_RETRY_MIN_SECONDS
        while True:
            self._wake.clear()
            try:
                next_due = await self._round()
            except Exception as error:  # the database is unavailable: try again soon
                if self.storage_error is None:
                    log.warning("Resync queue unavailable (%s); retrying every few seconds", error)
                self.storage_error = str(error)
                await asyncio.sleep(storage_delay)
                storage_delay = min(storage_delay * 2, STORAGE_RETRY_MAX_SECONDS)
                continue
            if self.storage_error is not None:
                log.info("Resync queue available again")
                self.storage_error = None
            storage_delay = STORAGE_RETRY_MIN_SECONDS
            sleep = MAX_SLEEP_SECONDS
            if next_due is not None:
                sleep = min(sleep, max(0.01, next_due / 1000 - time.time()))
            await sleep_unless(self._wake, sleep)

    async def _round(self) -> int | None:
        """Write what could not be written, start the due resyncs; when the next one is due."""
        for room_id, error in list(self._unsaved.items()):
            await self.store.queue_resync(room_id, "a failure while the database was unavailable", error)
            del self._unsaved[room_id]
        room_limit = self.config.sync_concurrency
        if len(self._in_flight) < room_limit:
            for stale in await self.store.due_resyncs(room_limit + len(self._in_flight)):
                if stale.room_id not in self._in_flight and len(self._in_flight) < room_limit:
                    self._start(stale.room_id, stale.reason)
        if len(self._in_flight) >= room_limit:
            return None  # at the limit: a resync that finishes wakes the repairer
        return await self.store.next_resync_due(excluding=frozenset(self._in_flight))

    def _start(self, room_id: RoomID, reason: str) -> None:
        async def repair() -> None:
            try:
                await self._sync_room(room_id, f"repair ({reason})", kind="repair")
            except Exception:  # sync_room reports its failures; this is a last resort
                log.exception("Repairing %s failed", room_id)
            finally:
                del self._in_flight[room_id]
                self.wake()

        self._in_flight[room_id] = self._spawn(repair(), f"repair-{room_id}")
